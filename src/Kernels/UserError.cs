using ILGPU;
using ILGPU.Runtime;

namespace IlgpuDdpm.Kernels;

/// <summary>
/// An error the user can cause and fix: a missing or malformed file, a bad option, an absent device, a run
/// folder in use. Its message is one line that names the thing and what was expected, fit to show as it is
/// (DESIGN.md §2). Every layer's one-line error derives from this class, so the command line reports them
/// with one <c>catch (UserError)</c> and treats anything else as an internal error.
/// </summary>
public abstract class UserError : Exception
{
    /// <summary>Creates the error with its one-line message.</summary>
    protected UserError(string message) : base(message) { }

    /// <summary>Creates the error with its one-line message and the low-level cause.</summary>
    protected UserError(string message, Exception? inner) : base(message, inner) { }

    /// <summary>
    /// <paramref name="e"/> as a user error: itself when it is one, an <see cref="AcceleratorError"/> for an
    /// error the accelerator's driver reported (out of device memory, a lost device), else null (a bug).
    /// ILGPU's compiler errors (<see cref="InternalCompilerException"/> and the like) stay bugs.
    /// </summary>
    public static UserError? From(Exception e) => e switch
    {
        UserError user => user,
        AcceleratorException accelerator => new AcceleratorError(accelerator),
        CapabilityNotSupportedException capability => new AcceleratorError(capability),
        _ => null,
    };
}

/// <summary>The accelerator's driver refused or failed an operation (for example out of device memory).</summary>
public sealed class AcceleratorError : UserError
{
    /// <summary>Wraps the driver's error; the message says what the device reported.</summary>
    public AcceleratorError(Exception driverError)
        : base($"the accelerator reported an error: {driverError.Message.ReplaceLineEndings(" ").Trim()} (try a smaller --batch, or --device cpu)", driverError) { }
}
