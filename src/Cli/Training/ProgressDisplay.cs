using Spectre.Console;

namespace IlgpuDdpm.Cli.Training;

/// <summary>Where a long-running loop reports: a live Spectre.Console bar on a terminal, plain lines otherwise.</summary>
internal interface IProgressDisplay
{
    /// <summary>Moves the bar to <paramref name="value"/> (of the maximum given at start) with <paramref name="status"/> as its text.</summary>
    void Update(double value, string status);

    /// <summary>Prints a line (above the bar when it is live).</summary>
    void Note(string line);
}

/// <summary>Runs a loop under a progress display.</summary>
internal static class ProgressDisplay
{
    /// <summary>
    /// Runs <paramref name="body"/> with a live bar (terminal) or with plain lines on <see cref="CliContext.Output"/>,
    /// where <paramref name="printLine"/> decides which updates become a line.
    /// </summary>
    public static T Run<T>(CliContext context, string title, double maxValue, Func<double, bool> printLine, Func<IProgressDisplay, T> body)
    {
        if (!context.Interactive)
            return body(new Plain(context.Output, printLine));
        return context.Console.Progress()
            .AutoClear(false)
            .HideCompleted(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask(Markup.Escape(title), autoStart: true, maxValue: Math.Max(maxValue, 1e-9));
                return body(new Live(context.Console, task));
            });
    }

    private sealed class Plain(TextWriter output, Func<double, bool> printLine) : IProgressDisplay
    {
        public void Update(double value, string status)
        {
            if (printLine(value)) output.WriteLine(status);
        }

        public void Note(string line) => output.WriteLine(line);
    }

    private sealed class Live(IAnsiConsole console, ProgressTask task) : IProgressDisplay
    {
        public void Update(double value, string status)
        {
            task.Description = Markup.Escape(status);
            task.Value = Math.Min(value, task.MaxValue);
        }

        public void Note(string line) => console.WriteLine(line);
    }
}
