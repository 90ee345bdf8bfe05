using System.Buffers.Binary;
using IlgpuDdpm.Cli;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Cli;

/// <summary>What one in-process <c>ddpm</c> invocation returned and printed.</summary>
internal sealed record CliResult(int ExitCode, string Output, string Error)
{
    public string[] ErrorLines => Error.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    public override string ToString() => $"exit {ExitCode}\n--- stdout\n{Output}\n--- stderr\n{Error}";
}

/// <summary>
/// Runs <c>ddpm</c> in-process on the shared CPU accelerator (so kernels compile once per test run), with
/// small generated data sets: IDX files of 8×8 grey images whose pixels are smooth, distinct patterns.
/// </summary>
internal static class CliHarness
{
    /// <summary>Runs the command line with <c>--device cpu</c> meaning the shared test device.</summary>
    public static CliResult Run(params string[] args) => Run(CancellationToken.None, args);

    /// <summary>Runs the command line; <paramref name="interrupt"/> stands for Ctrl-C.</summary>
    public static CliResult Run(CancellationToken interrupt, params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        var context = new CliContext(output, error, interactive: false, interrupt,
            openDevice: choice => choice is null or "cpu" or "auto"
                ? TestDevice.Cpu
                : throw new AssertionException($"tests only use the CPU accelerator, got --device {choice}"),
            releaseDevice: _ => { });
        int code = Program.Run(args, context);
        var result = new CliResult(code, output.ToString(), error.ToString());
        TestContext.Out.WriteLine($"ddpm {string.Join(' ', args)}\n{result}");
        return result;
    }

    /// <summary>Asserts a failure: the exit code, nothing but the expected one-line error (usage errors end with the --help hint), no stack trace.</summary>
    public static void AssertOneLineError(CliResult r, int exitCode, params string[] mentions)
    {
        Assert.That(r.ExitCode, Is.EqualTo(exitCode), r.ToString());
        var lines = r.ErrorLines;
        Assert.That(lines, Has.Length.EqualTo(1), r.ToString());
        Assert.That(lines[0], Does.StartWith("ddpm"), r.ToString());
        if (exitCode == Program.UsageExitCode) Assert.That(lines[0], Does.Match(@"\(see 'ddpm[a-z ]*--help'\)$"), r.ToString());
        Assert.That(r.Error, Does.Not.Contain("   at ").And.Not.Contain("Exception"), r.ToString());
        Assert.That(lines[0], Does.Not.Contain("internal error"), r.ToString());
        foreach (var m in mentions) Assert.That(lines[0], Does.Contain(m).IgnoreCase, r.ToString());
    }

    /// <summary>
    /// Writes train- and t10k-images IDX files of <paramref name="count"/> and <paramref name="testCount"/>
    /// <paramref name="size"/>×<paramref name="size"/> images into <paramref name="folder"/>: smooth blobs
    /// at varying positions, so the images differ and are easy to learn.
    /// </summary>
    public static string WriteIdxDataset(string folder, int count = 32, int testCount = 8, int size = 8)
    {
        Directory.CreateDirectory(folder);
        WriteIdx(Path.Combine(folder, "train-images-idx3-ubyte"), Blobs(count, size, seed: 1), count, size);
        WriteIdx(Path.Combine(folder, "t10k-images-idx3-ubyte"), Blobs(testCount, size, seed: 2), testCount, size);
        return folder;
    }

    private static byte[] Blobs(int count, int size, int seed)
    {
        var pixels = new byte[count * size * size];
        var rng = new Random(seed);
        for (int n = 0; n < count; n++)
        {
            double cx = rng.NextDouble() * size, cy = rng.NextDouble() * size, r = 1.5 + rng.NextDouble() * size / 4;
            for (int y = 0; y < size; y++)
                for (int x = 0; x < size; x++)
                {
                    double d2 = ((x - cx) * (x - cx) + (y - cy) * (y - cy)) / (r * r);
                    pixels[(n * size + y) * size + x] = (byte)Math.Round(255 * Math.Exp(-d2));
                }
        }
        return pixels;
    }

    private static void WriteIdx(string path, byte[] pixels, int count, int size)
    {
        var bytes = new byte[16 + pixels.Length];
        BinaryPrimitives.WriteInt32BigEndian(bytes, 0x803);
        BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(4), count);
        BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(8), size);
        BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(12), size);
        pixels.CopyTo(bytes, 16);
        File.WriteAllBytes(path, bytes);
    }

    /// <summary>A fresh folder under the temp folder.</summary>
    public static string NewTempFolder(string what)
    {
        var path = Path.Combine(Path.GetTempPath(), $"ddpm-cli-{what}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(path);
        return path;
    }

    /// <summary>Copies a folder tree (to resume a copy of a run without touching the original).</summary>
    public static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var dir in Directory.GetDirectories(from, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(from, dir)));
        foreach (var file in Directory.GetFiles(from, "*", SearchOption.AllDirectories))
            File.Copy(file, Path.Combine(to, Path.GetRelativePath(from, file)), overwrite: true);
    }
}
