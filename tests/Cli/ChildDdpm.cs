using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Cli;

/// <summary>
/// <c>ddpm</c> as a child process (the built ddpm.dll run by <c>dotnet</c>), so a test can kill it with a
/// real signal. Its output lines are collected as they come; <see cref="LastStep"/> is the last "step N/M"
/// progress line seen.
/// </summary>
internal sealed partial class ChildDdpm : IDisposable
{
    public const int SigInt = 2, SigKill = 9, SigTerm = 15;

    private readonly Process process;
    private readonly List<string> output = [], error = [];
    private long lastStep = -1;

    private ChildDdpm(Process process) => this.process = process;

    /// <summary>Starts <c>ddpm <paramref name="args"/></c> with the CPU accelerator.</summary>
    public static ChildDdpm Start(params string[] args)
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "ddpm.dll");
        var info = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(dll);
        foreach (var a in args) info.ArgumentList.Add(a);
        info.Environment["DDPM_DEVICE"] = "cpu";
        info.Environment.Remove("DDPM_DEBUG");
        var p = new Process { StartInfo = info };
        var child = new ChildDdpm(p);
        p.OutputDataReceived += (_, e) => child.OnOutput(e.Data);
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (child.error) child.error.Add(e.Data); };
        if (!p.Start()) throw new AssertionException("could not start dotnet ddpm.dll");
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return child;
    }

    [GeneratedRegex(@"^step (\d+)/\d+")]
    private static partial Regex StepLine();

    private void OnOutput(string? line)
    {
        if (line is null) return;
        lock (output) output.Add(line);
        var m = StepLine().Match(line);
        if (m.Success) Interlocked.Exchange(ref lastStep, long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture));
    }

    public int Pid => process.Id;

    /// <summary>The last training step the child reported (−1 before the first).</summary>
    public long LastStep => Interlocked.Read(ref lastStep);

    public string Output { get { lock (output) return string.Join('\n', output); } }

    public string[] ErrorLines { get { lock (error) return [.. error]; } }

    public bool HasExited => process.HasExited;

    /// <summary>Waits (polling, so a loaded machine only makes it slower) until <paramref name="condition"/> holds or the child exits.</summary>
    public bool WaitFor(Func<ChildDdpm, bool> condition, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < timeout)
        {
            if (condition(this)) return true;
            if (process.HasExited) return condition(this);
            Thread.Sleep(5);
        }
        return false;
    }

    /// <summary>Sends <paramref name="signal"/> to the child.</summary>
    public void Signal(int signal)
    {
        if (kill(process.Id, signal) != 0 && !process.HasExited)
            throw new AssertionException($"kill({process.Id}, {signal}) failed: errno {Marshal.GetLastPInvokeError()}");
    }

    /// <summary>Waits for the child to end and returns its exit code (−1 when it was killed by a signal).</summary>
    public int WaitForExit(TimeSpan timeout)
    {
        if (!process.WaitForExit(timeout))
        {
            process.Kill();
            throw new AssertionException($"ddpm did not exit within {timeout.TotalSeconds:F0} s\n{this}");
        }
        process.WaitForExit(); // drains the output readers
        return process.ExitCode;
    }

    public override string ToString() => $"--- stdout\n{Output}\n--- stderr\n{string.Join('\n', ErrorLines)}";

    public void Dispose()
    {
        try { if (!process.HasExited) { process.Kill(); process.WaitForExit(); } }
        catch (InvalidOperationException) { }
        process.Dispose();
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int signal);
}
