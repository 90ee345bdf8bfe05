using IlgpuDdpm.Kernels;

namespace IlgpuDdpm.Diffusion.Checkpoints;

/// <summary>
/// A checkpoint could not be written or read: a missing, truncated or malformed file, or tensors that do
/// not fit what was expected. The message is one line naming the file and the problem (DESIGN.md §2).
/// </summary>
public sealed class CheckpointException : UserError
{
    /// <summary>Creates the exception with its one-line message.</summary>
    public CheckpointException(string message) : base(message) { }

    /// <summary>Creates the exception with its one-line message and the low-level cause.</summary>
    public CheckpointException(string message, Exception inner) : base(message, inner) { }
}
