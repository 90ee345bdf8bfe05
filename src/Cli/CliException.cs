using IlgpuDdpm.Kernels;

namespace IlgpuDdpm.Cli;

/// <summary>A failure the user can fix (missing file, mismatched input); printed as one line, exit code 1.</summary>
internal class CliException(string message) : UserError(message);

/// <summary>A bad option value or combination; printed as one line plus a pointer to --help, exit code 2.</summary>
internal sealed class UsageException(string message) : CliException(message);
