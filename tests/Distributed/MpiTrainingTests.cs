using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using IlgpuDdpm.Diffusion.Checkpoints;
using IlgpuDdpm.Diffusion.Distributed;
using IlgpuDdpm.Tests.Cli;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Distributed;

/// <summary>
/// Issue 10 item 4: <c>ddpm train</c> under <c>mpirun -np 2</c> on the CPU accelerator matches one process on
/// the same global batch (only the all-reduce's summation order and the shards' loss means may round
/// differently), and a run continues correctly when resumed with another number of ranks. Skipped, saying so,
/// when Open MPI's mpirun is not installed.
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class MpiTrainingTests
{
    private const int Steps = 20;
    private const double Tolerance = 1e-5;
    private static readonly TimeSpan Patience = TimeSpan.FromMinutes(4);

    private string root = null!, data = null!, single = null!;
    private string? mpirun;

    [OneTimeSetUp]
    public void TrainOneProcess()
    {
        mpirun = FindMpirun();
        if (mpirun is null) return;
        root = CliHarness.NewTempFolder("mpi");
        data = CliHarness.WriteIdxDataset(Path.Combine(root, "data"), count: 16, testCount: 4, size: 8);
        single = Path.Combine(root, "single");
        Run(1, TrainArgs(single, Steps));
    }

    [OneTimeTearDown]
    public void DeleteFolder()
    {
        if (mpirun is null) return;
        try { Directory.Delete(root, recursive: true); }
        catch (IOException) { }
    }

    [SetUp]
    public void RequireMpirun()
    {
        if (mpirun is null)
            Assert.Ignore("Open MPI's mpirun is not installed (Debian: apt-get install openmpi-bin libopenmpi-dev): the multi-rank tests are skipped");
    }

    [Test]
    public void TwoRanks_GiveTheLossesAndWeightsOfOneProcess()
    {
        string two = Path.Combine(root, "two");
        string output = Run(2, TrainArgs(two, Steps));
        Assert.That(output, Does.Contain("global batch 4 = 2 x 2"));
        Assert.That(output, Does.Contain("all-reduce:"));
        AssertSameRun(two, single);
    }

    [Test]
    public void ResumedWithAnotherNumberOfRanks_ContinuesLikeOneUninterruptedRun()
    {
        // 2 ranks → 1 process → 2 ranks: each segment resumes the checkpoint the previous one wrote.
        string chain = Path.Combine(root, "chain");
        Run(2, TrainArgs(chain, 7));
        Run(1, ["train", "--resume", chain, "--steps", "14"]);
        Run(2, ["train", "--resume", chain, "--steps", Steps.ToString(CultureInfo.InvariantCulture)]);
        AssertSameRun(chain, single);
    }

    [Test]
    public void BatchNotDividedByTheRanks_IsRefusedInOneLine()
    {
        string odd = Path.Combine(root, "odd");
        string[] args = [.. TrainArgs(odd, 2)];
        args[Array.IndexOf(args, "--batch") + 1] = "3";
        var (code, output) = Start(2, args);
        Assert.That(code, Is.Not.Zero, output);
        Assert.That(output, Does.Contain("--batch 3 cannot be split over 2 ranks"));
        Assert.That(Directory.Exists(odd), Is.False, "nothing may be written for a refused run");
    }

    private string[] TrainArgs(string outDir, int steps) =>
        ["train", "--data", data, "--preset", "tiny", "--steps", steps.ToString(CultureInfo.InvariantCulture), "--batch", "4",
         "--timesteps", "20", "--warmup", "2", "--ema", "0.5", "--sample-every", "0", "--checkpoint-every", "0",
         "--log-every", "1", "--print-every", "5", "--device", "cpu", "--seed", "13", "--out", outDir];

    /// <summary>Runs ddpm on <paramref name="ranks"/> ranks; asserts exit code 0; returns the output.</summary>
    private string Run(int ranks, string[] args)
    {
        var (code, output) = Start(ranks, args);
        Assert.That(code, Is.Zero, output);
        return output;
    }

    /// <summary>1 rank: a plain process (no launcher, no MPI library); more: under mpirun.</summary>
    private (int Code, string Output) Start(int ranks, string[] args)
    {
        string dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet";
        var info = new ProcessStartInfo(ranks == 1 ? dotnet : mpirun!)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        string[] launcher = ranks == 1 ? [] : ["--allow-run-as-root", "--oversubscribe", "-np", ranks.ToString(CultureInfo.InvariantCulture), "-x", "DDPM_DEVICE=cpu", dotnet];
        foreach (var a in (string[])[.. launcher, Path.Combine(AppContext.BaseDirectory, "ddpm.dll"), .. args])
            info.ArgumentList.Add(a);
        info.Environment["DDPM_DEVICE"] = "cpu";
        info.Environment.Remove("DDPM_DEBUG");
        using var process = Process.Start(info)!;
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEndAsync();
        if (!process.WaitForExit(Patience))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"mpirun -np {ranks} ddpm {string.Join(' ', args)} did not finish in {Patience}");
        }
        return (process.ExitCode, stdout.Result + "\n" + stderr.Result);
    }

    /// <summary>The per-step losses of metrics.jsonl and the final checkpoint agree to <see cref="Tolerance"/>.</summary>
    private static void AssertSameRun(string actualFolder, string expectedFolder)
    {
        var expected = Losses(expectedFolder);
        var actual = Losses(actualFolder);
        Assert.That(actual, Has.Count.EqualTo(Steps));
        for (int i = 0; i < Steps; i++)
            Assert.That(RelativeDifference(actual[i], expected[i]), Is.LessThanOrEqualTo(Tolerance), $"loss of step {i + 1}: {actual[i]} vs {expected[i]}");
        AssertSameState(actualFolder, expectedFolder);
    }

    private static List<double> Losses(string folder) =>
        [.. File.ReadLines(Path.Combine(folder, "metrics.jsonl")).Select(line => JsonDocument.Parse(line).RootElement.GetProperty("loss").GetDouble())];

    /// <summary>
    /// Weights, Adam moments and EMA weights agree to <see cref="Tolerance"/> relative (‖a − b‖ / ‖b‖ per tensor).
    /// Not the attention key biases (<c>*.k.bias</c>): adding a constant to every key adds the same q·b to every
    /// logit of a query, which softmax cancels, so their exact gradient is 0 and what the backward pass gives is
    /// rounding noise; Adam divides by √v and turns that noise into full-size steps, different for any two
    /// summation orders (measured: 0.6 to 1.8 relative after 20 steps, every other tensor within 2e-6). They are checked over
    /// the whole file instead, where they weigh what they are worth.
    /// </summary>
    private static void AssertSameState(string actualFolder, string expectedFolder)
    {
        var actualPair = Checkpoint.Locate(actualFolder);
        var expectedPair = Checkpoint.Locate(expectedFolder);
        foreach (var (actualFile, expectedFile) in new[] { (actualPair.ModelFile, expectedPair.ModelFile), (actualPair.StateFile!, expectedPair.StateFile!) })
        {
            var actual = SafeTensors.Read(actualFile);
            var expected = SafeTensors.Read(expectedFile);
            Assert.That(actual.Tensors.Keys, Is.EquivalentTo(expected.Tensors.Keys));
            double fileDiff = 0, fileNorm = 0;
            foreach (var (name, tensor) in expected.Tensors)
            {
                if (tensor.Floats is not { } b) continue;
                var a = actual.Tensors[name].Floats!;
                double diff = 0, norm = 0;
                for (int i = 0; i < b.Length; i++) { diff += (a[i] - (double)b[i]) * (a[i] - (double)b[i]); norm += (double)b[i] * b[i]; }
                fileDiff += diff;
                fileNorm += norm;
                if (name.EndsWith(".k.bias", StringComparison.Ordinal)) continue;
                double relative = norm == 0 ? Math.Sqrt(diff) : Math.Sqrt(diff / norm);
                Assert.That(relative, Is.LessThanOrEqualTo(Tolerance), $"{Path.GetFileName(expectedFile)}: {name} differs by {relative:E2} relative");
            }
            Assert.That(Math.Sqrt(fileDiff / fileNorm), Is.LessThanOrEqualTo(Tolerance), $"{Path.GetFileName(expectedFile)} as a whole");
        }
    }

    private static double RelativeDifference(double a, double b) => Math.Abs(a - b) / Math.Max(Math.Abs(b), 1e-30);

    private static string? FindMpirun() =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Select(dir => Path.Combine(dir, "mpirun")).FirstOrDefault(File.Exists);
}

/// <summary>Issue 10 item 2: which launch means MPI, without starting one.</summary>
[TestFixture]
public sealed class LauncherTests
{
    [Test]
    public void NoLauncherVariables_MeanOneProcessAndNoMpiLibrary() =>
        Assert.That(Launcher.Open(_ => null), Is.SameAs(SingleProcess.Instance));

    [Test]
    public void AnotherMpisLauncher_IsRefusedInOneLineNamingWhatWasFound()
    {
        var e = Assert.Throws<DistributedError>(() => Launcher.Open(name => name == "PMI_RANK" ? "0" : null));
        Assert.That(e!.Message, Does.Contain("PMI_RANK=0").And.Contain("Open MPI").And.Not.Contain("\n"));
    }

    [Test]
    public void OpenMpisLauncherVariables_AreRecognised()
    {
        Assert.That(Launcher.OpenMpiVariable(name => name == "OMPI_COMM_WORLD_SIZE" ? "2" : null), Is.EqualTo("OMPI_COMM_WORLD_SIZE"));
        Assert.That(Launcher.OpenMpiVariable(name => name == "PMIX_RANK" ? "1" : null), Is.EqualTo("PMIX_RANK"));
        Assert.That(Launcher.OpenMpiVariable(_ => null), Is.Null);
    }
}
