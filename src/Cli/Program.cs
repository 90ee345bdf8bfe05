using System.CommandLine;
using System.CommandLine.Help;
using System.Reflection;
using System.Runtime.InteropServices;
using IlgpuDdpm.Cli.Commands;
using IlgpuDdpm.Kernels;

namespace IlgpuDdpm.Cli;

/// <summary>
/// Entry point of the <c>ddpm</c> command: <c>train</c>, <c>sample</c>, <c>eval</c>, <c>forward</c>,
/// <c>summary</c>, <c>devices</c>, <c>selfcheck</c>. <see cref="Run(string[], TextWriter, TextWriter)"/>
/// is the whole program without the process around it (tests call it in-process).
/// Exit codes: 0 success, 1 a failure the user can fix (missing or corrupt file, unavailable device,
/// self-check failure), 2 a bad command line, 130 training interrupted by Ctrl-C or SIGTERM (after saving).
/// </summary>
public static class Program
{
    /// <summary>Exit code of a bad command line or option value.</summary>
    public const int UsageExitCode = 2;

    /// <summary>Exit code of a run that failed for a reason named on stderr.</summary>
    public const int FailureExitCode = 1;

    /// <summary>Exit code after Ctrl-C (training saves a checkpoint first).</summary>
    public const int InterruptedExitCode = 130;

    public static int Main(string[] args)
    {
        // First Ctrl-C: ask the running command to stop cleanly (training saves a checkpoint and exits
        // with 130). Second Ctrl-C: the default handler ends the process at once.
        // Only a command that can stop cleanly (training) takes over Ctrl-C; elsewhere it ends the process.
        using var interrupt = new CancellationTokenSource();
        var context = new CliContext(Console.Out, Console.Error, interactive: !Console.IsOutputRedirected, interrupt.Token);
        ConsoleCancelEventHandler handler = (_, e) =>
        {
            if (!context.StopsCleanlyOnInterrupt || interrupt.IsCancellationRequested) return; // let the process end
            e.Cancel = true;
            interrupt.Cancel();
            Console.Error.WriteLine("ddpm: Ctrl-C: saving a checkpoint after the current step (press Ctrl-C again to abort without saving)");
        };
        Console.CancelKeyPress += handler;
        // SIGTERM (kill, a job scheduler, docker stop) stops training the same way, and a repeated SIGTERM changes nothing:
        // a signal sent to the process group under `dotnet run` arrives twice (once directly, once forwarded by the SDK),
        // and ending at the second lost the checkpoint. Schedulers escalate with SIGKILL, which needs no help.
        using var terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, signal =>
        {
            if (!context.StopsCleanlyOnInterrupt) return;
            signal.Cancel = true;
            if (interrupt.IsCancellationRequested) return; // already stopping
            interrupt.Cancel();
            Console.Error.WriteLine("ddpm: SIGTERM: saving a checkpoint after the current step");
        });
        try
        {
            return Run(args, context);
        }
        finally
        {
            Console.CancelKeyPress -= handler;
        }
    }

    /// <summary>Runs the command line <paramref name="args"/> writing to the given writers (never to the console).</summary>
    public static int Run(string[] args, TextWriter output, TextWriter error) =>
        Run(args, new CliContext(output, error, interactive: false, CancellationToken.None));

    /// <summary>Runs the command line <paramref name="args"/>; <paramref name="interrupt"/> plays the part of Ctrl-C.</summary>
    public static int Run(string[] args, TextWriter output, TextWriter error, CancellationToken interrupt) =>
        Run(args, new CliContext(output, error, interactive: false, interrupt));

    /// <summary>Runs <paramref name="args"/> in <paramref name="context"/> (its writers, device factory and interrupt).</summary>
    internal static int Run(string[] args, CliContext context)
    {
        var root = BuildRoot(context);
        var parse = root.Parse(args);
        string commandName = CommandPath(parse.CommandResult, root);
        if (parse.Errors.Count > 0)
        {
            context.Error.WriteLine($"{commandName}: {ParseErrorLine(parse, root)} (see '{commandName} --help')");
            return UsageExitCode;
        }
        try
        {
            return parse.Invoke(new InvocationConfiguration
            {
                Output = context.Output,
                Error = context.Error,
                EnableDefaultExceptionHandler = false,
                ProcessTerminationTimeout = null, // Ctrl-C is ours (Main), not System.CommandLine's
            });
        }
        catch (Exception e)
        {
            return ReportFailure(context, commandName, e);
        }
    }

    /// <summary>The command tree.</summary>
    internal static Command BuildRoot(CliContext context)
    {
        var root = new Command("ddpm",
            "DDPM (Ho et al. 2020) in C# and ILGPU kernels: train a U-Net denoiser on images, sample from it, " +
            "evaluate its bits/dim, and check the accelerator.");
        root.Options.Add(new HelpOption { Recursive = true });
        root.Options.Add(new VersionOption());
        root.Subcommands.Add(TrainCommand.Create(context));
        root.Subcommands.Add(SampleCommand.Create(context));
        root.Subcommands.Add(EvalCommand.Create(context));
        root.Subcommands.Add(ForwardCommand.Create(context));
        root.Subcommands.Add(SummaryCommand.Create(context));
        root.Subcommands.Add(DevicesCommand.Create(context));
        root.Subcommands.Add(SelfCheckCommand.Create(context));
        root.Subcommands.Add(ClassifierCommand.Create(context));
        root.Subcommands.Add(ScoreCommand.Create(context));
        return root;
    }

    /// <summary>The most useful of the parse errors, as one line.</summary>
    private static string ParseErrorLine(ParseResult parse, Command root)
    {
        string commands = string.Join(", ", root.Subcommands.Select(c => c.Name));
        if (ReferenceEquals(parse.CommandResult.Command, root))
        {
            if (parse.Tokens.Count == 0) return $"no command given; expected one of {commands}";
            if (parse.UnmatchedTokens.Count > 0 && !parse.UnmatchedTokens[0].StartsWith('-'))
                return $"unknown command '{parse.UnmatchedTokens[0]}'; expected one of {commands}";
        }
        // "Required command was not provided" says least; any other error first.
        var error = parse.Errors.FirstOrDefault(e => !e.Message.StartsWith("Required command", StringComparison.Ordinal)) ?? parse.Errors[0];
        return OneLine(error.Message);
    }

    /// <summary>Prints one line for <paramref name="e"/> and returns the exit code.</summary>
    internal static int ReportFailure(CliContext context, string commandName, Exception e)
    {
        e = Unwrap(e);
        if (e is UsageException)
        {
            context.Error.WriteLine($"{commandName}: {OneLine(e.Message)} (see '{commandName} --help')");
            return UsageExitCode;
        }
        if (e is OperationCanceledException)
        {
            context.Error.WriteLine($"{commandName}: interrupted");
            return InterruptedExitCode;
        }
        // A user error (every one-line error derives from UserError; accelerator driver errors are translated
        // by UserError.From) and the file system's own errors, whose messages name the path, are one line;
        // anything else is a bug and says so.
        var user = UserError.From(e);
        bool expected = user is not null || e is IOException or UnauthorizedAccessException or OutOfMemoryException;
        string message = OneLine((user ?? e).Message);
        if (!expected) message = $"internal error ({e.GetType().Name}): {message}";
        context.Error.WriteLine($"{commandName}: {message}");
        if (Environment.GetEnvironmentVariable("DDPM_DEBUG") is "1" or "true") context.Error.WriteLine(e.ToString());
        return FailureExitCode;
    }

    private static Exception Unwrap(Exception e)
    {
        while (true)
        {
            if (e is AggregateException { InnerExceptions.Count: 1 } a) e = a.InnerExceptions[0];
            else if (e is TargetInvocationException { InnerException: { } inner }) e = inner;
            else if (e is TypeInitializationException { InnerException: { } init }) e = init;
            else return e;
        }
    }

    /// <summary>"ddpm train" for the train command, "ddpm classifier train" for a nested one, "ddpm" for the root.</summary>
    private static string CommandPath(System.CommandLine.Parsing.CommandResult result, Command root)
    {
        var names = new List<string>();
        for (var r = result; r is not null && !ReferenceEquals(r.Command, root); r = r.Parent as System.CommandLine.Parsing.CommandResult)
            names.Insert(0, r.Command.Name);
        return names.Count == 0 ? "ddpm" : "ddpm " + string.Join(" ", names);
    }

    /// <summary>
    /// A message as one line: newlines joined with "; ", and .NET's " (Parameter 'x')" suffix dropped
    /// (the message already names the thing).
    /// </summary>
    internal static string OneLine(string message)
    {
        var text = System.Text.RegularExpressions.Regex.Replace(message ?? "", @"\s*\(Parameter '[^']*'\)", "");
        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return lines.Length == 0 ? "failed" : string.Join("; ", lines);
    }
}
