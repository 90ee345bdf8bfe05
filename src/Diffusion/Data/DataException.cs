using IlgpuDdpm.Kernels;

namespace IlgpuDdpm.Diffusion.Data;

/// <summary>
/// A data set could not be read: a missing, unreadable or malformed file or folder, or a bad option.
/// The message is one line that names the file (or data set) and what was expected, fit to show a user
/// as it is (DESIGN.md §2).
/// </summary>
public sealed class DataException : UserError
{
    /// <summary>Creates the exception with its one-line message.</summary>
    public DataException(string message) : base(message) { }

    /// <summary>Creates the exception with its one-line message and the low-level cause.</summary>
    public DataException(string message, Exception inner) : base(message, inner) { }
}
