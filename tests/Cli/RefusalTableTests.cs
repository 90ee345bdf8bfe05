using System.Buffers.Binary;
using System.Globalization;
using System.Security.Cryptography;
using IlgpuDdpm.Cli;
using IlgpuDdpm.Cli.Training;
using IlgpuDdpm.Diffusion.Checkpoints;
using IlgpuDdpm.Kernels.Device;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Cli;

/// <summary>
/// Issue 11 item 7: every bad input and bad option the CLI knows, in one table. Each refusal exits non-zero
/// with exactly one line on stderr that names the file or option and what was expected, no stack trace, and
/// leaves every existing file as it was (and creates none). docs/errors.md lists the same errors.
/// Paths in a row are placeholders filled in by <see cref="Resolve"/>.
/// </summary>
[TestFixture]
public sealed class RefusalTableTests
{
    /// <summary>One row: the command line, the exit code, and words the error line must contain.</summary>
    public sealed record Refusal(string Name, string[] Args, int Exit, params string[] Mentions)
    {
        public override string ToString() => Name;
    }

    private const int Usage = Program.UsageExitCode, Failure = Program.FailureExitCode;

    private static readonly string[] TrainTiny = ["--data", "{data}", "--preset", "tiny", "--batch", "2", "--timesteps", "20", "--sample-every", "0", "--device", "cpu"];

    /// <summary><c>train</c> with the tiny defaults, <paramref name="extra"/> replacing any option it names again.</summary>
    private static string[] Train(params string[] extra)
    {
        var args = new List<string> { "train" };
        for (int i = 0; i < TrainTiny.Length; i += 2)
            if (!extra.Contains(TrainTiny[i])) args.AddRange([TrainTiny[i], TrainTiny[i + 1]]);
        return [.. args, .. extra];
    }

    public static IEnumerable<Refusal> Table() =>
    [
        // The command line itself.
        new("no command", [], Usage, "no command", "train"),
        new("unknown command", ["frobnicate"], Usage, "unknown command 'frobnicate'"),
        new("unknown option", ["train", "--bogus"], Usage, "--bogus"),
        new("option without its value", ["sample", "--checkpoint"], Usage, "--checkpoint"),
        new("required option missing: sample --checkpoint", ["sample"], Usage, "--checkpoint"),
        new("required option missing: eval --data", ["eval", "--checkpoint", "{run}"], Usage, "--data"),
        new("required option missing: forward --input", ["forward", "--checkpoint", "{run}", "--output", "{tmp}/eps.safetensors"], Usage, "--input"),

        // train: option values.
        new("train --batch 0", Train("--batch", "0", "--out", "{tmp}/new"), Usage, "--batch", "positive"),
        new("train --batch abc", Train("--batch", "abc", "--out", "{tmp}/new"), Usage, "--batch", "abc"),
        new("train --lr -1", Train("--lr", "-1", "--out", "{tmp}/new"), Usage, "--lr", "> 0"),
        new("train --ema 1", Train("--ema", "1", "--out", "{tmp}/new"), Usage, "--ema", "< 1"),
        new("train --grad-clip 0", Train("--grad-clip", "0", "--out", "{tmp}/new"), Usage, "--grad-clip"),
        new("train --warmup -1", Train("--warmup", "-1", "--out", "{tmp}/new"), Usage, "--warmup", "non-negative"),
        new("train --preset huge", Train("--preset", "huge", "--out", "{tmp}/new"), Usage, "--preset", "tiny"),
        new("train --schedule quadratic", Train("--schedule", "quadratic", "--out", "{tmp}/new"), Usage, "--schedule", "linear"),
        new("train --timesteps 1", Train("--timesteps", "1", "--out", "{tmp}/new"), Usage, "--timesteps", "2"),
        new("train --steps 0", Train("--steps", "0", "--out", "{tmp}/new"), Usage, "--steps", "positive"),
        new("train --minutes 0", Train("--minutes", "0", "--out", "{tmp}/new"), Usage, "--minutes", "> 0"),
        new("train --steps and --minutes", Train("--steps", "5", "--minutes", "1", "--out", "{tmp}/new"), Usage, "--steps", "--minutes"),
        new("train --device tpu", Train("--device", "tpu", "--out", "{tmp}/new"), Usage, "--device", "cuda"),
        new("train --size 0", Train("--size", "0", "--out", "{tmp}/new"), Usage, "--size", "positive"),
        new("train --channels 2", Train("--channels", "2", "--out", "{tmp}/new"), Failure, "2 channels", "1 (grayscale) or 3"),
        new("train --sample-count 0", Train("--sample-count", "0", "--out", "{tmp}/new"), Usage, "--sample-count"),
        new("train --checkpoint-every -1", Train("--checkpoint-every", "-1", "--out", "{tmp}/new"), Usage, "--checkpoint-every"),
        new("train --log-every 0", Train("--log-every", "0", "--out", "{tmp}/new"), Usage, "--log-every"),
        new("train --preset small on 6x6 images", ["train", "--data", "{data6}", "--preset", "small", "--device", "cpu", "--out", "{tmp}/new"], Usage, "--preset small", "--size"),

        // train: the run folder.
        new("train --out is a file", Train("--out", "{file}"), Usage, "--out", "is a file"),
        new("train --out holds a checkpoint", Train("--out", "{run}"), Usage, "--out", "already holds a checkpoint", "--resume"),
        new("train --resume without a folder", ["train", "--resume"], Usage, "--resume", "run folder"),
        new("train --resume and --out differ", ["train", "--resume", "{run}", "--out", "{tmp}/other"], Usage, "--resume", "--out", "different"),
        new("train --resume of a missing folder", ["train", "--resume", "{tmp}/no-such-run"], Failure, "no-such-run", "no such folder"),
        new("train --resume changes --batch", ["train", "--resume", "{run}", "--batch", "8"], Usage, "--batch 8", "differs"),
        new("train --resume of a folder without config.json", ["train", "--resume", "{noconfig}"], Failure, "config.json", "not found"),
        new("train --resume with a broken config.json", ["train", "--resume", "{badconfig}"], Failure, "config.json", "not a valid run config"),
        new("train --resume with a config.json value out of range", ["train", "--resume", "{rangeconfig}"], Failure, "config.json", "batch"),
        new("train --resume of a folder without a checkpoint", ["train", "--resume", "{nocheckpoint}"], Failure, "nocheckpoint", "no checkpoint"),
        new("train --resume of a mismatched pair", ["train", "--resume", "{mixed}"], Failure, "state.safetensors", "does not belong", "step 2", "step 4"),
        new("train --resume with the pair's files gone", ["train", "--resume", "{damaged}"], Failure, "checkpoint.json", "missing"),
        new("train --resume with a damaged manifest", ["train", "--resume", "{badmanifest}"], Failure, "checkpoint.json", "not a valid checkpoint manifest"),
        new("train --resume of a folder in use", ["train", "--resume", "{locked}"], Failure, "locked", "in use", "pid"),
        new("train --resume mixing two runs", ["train", "--resume", "{otherrun}"], Failure, "config.json", "mixes two runs"),

        // train: data.
        new("train --data of a missing data set", ["train", "--data", "{tmp}/no-such-data", "--preset", "tiny", "--device", "cpu", "--out", "{tmp}/new"], Failure, "no-such-data", "not found"),
        new("train --data of a truncated IDX file", ["train", "--data", "{truncidx}", "--preset", "tiny", "--device", "cpu", "--out", "{tmp}/new"], Failure, "train-images-idx3-ubyte", "truncated"),
        new("train --data of a broken PNG", ["train", "--data", "{badpng}", "--preset", "tiny", "--device", "cpu", "--out", "{tmp}/new"], Failure, "broken.png", "not a readable image"),
        new("train --data of a decompression-bomb PNG", ["train", "--data", "{bomb}", "--preset", "tiny", "--device", "cpu", "--out", "{tmp}/new"], Failure, "bomb.png", "8000x8000"),
        new("train --data of a folder without images", ["train", "--data", "{emptydir}", "--preset", "tiny", "--device", "cpu", "--out", "{tmp}/new"], Failure, "emptydir", "no image files"),
        new("train on a device that is not here", Train("--device", "cuda", "--out", "{tmp}/new"), Failure, "cuda", "unavailable"),

        // sample.
        new("sample --checkpoint of a missing path", ["sample", "--checkpoint", "{tmp}/no-such-run", "--out", "{tmp}/grid.png"], Failure, "no-such-run", "no such checkpoint"),
        new("sample --checkpoint of a folder without a checkpoint", ["sample", "--checkpoint", "{emptydir}", "--out", "{tmp}/grid.png"], Failure, "emptydir", "checkpoint.json or model.safetensors"),
        new("sample --checkpoint of a corrupt file", ["sample", "--checkpoint", "{corrupt}", "--out", "{tmp}/grid.png"], Failure, "model.safetensors", "header length"),
        new("sample --checkpoint of a mismatched pair", ["sample", "--checkpoint", "{mixed}", "--out", "{tmp}/grid.png"], Failure, "does not belong"),
        new("sample --n 0", ["sample", "--checkpoint", "{run}", "--n", "0", "--out", "{tmp}/grid.png"], Usage, "--n"),
        new("sample --sampler foo", ["sample", "--checkpoint", "{run}", "--sampler", "foo", "--out", "{tmp}/grid.png"], Usage, "--sampler", "ddim"),
        new("sample --variance foo", ["sample", "--checkpoint", "{run}", "--variance", "foo", "--out", "{tmp}/grid.png"], Usage, "--variance", "large"),
        new("sample --steps above T", ["sample", "--checkpoint", "{run}", "--sampler", "ddim", "--steps", "999", "--out", "{tmp}/grid.png"], Usage, "--steps 999", "T = 20"),
        new("sample --steps with ddpm", ["sample", "--checkpoint", "{run}", "--sampler", "ddpm", "--steps", "5", "--out", "{tmp}/grid.png"], Usage, "--steps 5", "ddim"),
        new("sample --frames 1", ["sample", "--checkpoint", "{run}", "--frames", "1", "--out", "{tmp}/grid.png"], Usage, "--frames"),
        new("sample --out is a folder", ["sample", "--checkpoint", "{run}", "--out", "{emptydir}"], Usage, "--out", "is a folder"),
        new("sample --out under a file", ["sample", "--checkpoint", "{run}", "--out", "{file}/grid.png"], Usage, "--out", "is a file"),

        // eval.
        new("eval --data of a missing data set", ["eval", "--checkpoint", "{run}", "--data", "{tmp}/no-such-data"], Failure, "no-such-data", "not found"),
        new("eval --data without a test split", ["eval", "--checkpoint", "{run}", "--data", "{trainonly}"], Failure, "trainonly", "test split"),
        new("eval --checkpoint of a corrupt file", ["eval", "--checkpoint", "{corrupt}", "--data", "{data}"], Failure, "model.safetensors"),
        new("eval --checkpoint of a mismatched pair", ["eval", "--checkpoint", "{mixed}", "--data", "{data}"], Failure, "does not belong"),
        new("eval --n 0", ["eval", "--checkpoint", "{run}", "--data", "{data}", "--n", "0"], Usage, "--n"),

        // forward.
        new("forward --input of a missing file", ["forward", "--checkpoint", "{run}", "--input", "{tmp}/none.safetensors", "--output", "{tmp}/eps.safetensors"], Failure, "none.safetensors", "not found"),
        new("forward --input without x", ["forward", "--checkpoint", "{run}", "--input", "{nox}", "--output", "{tmp}/eps.safetensors"], Failure, "nox.safetensors", "no tensor 'x'"),
        new("forward --input of the wrong shape", ["forward", "--checkpoint", "{run}", "--input", "{badshape}", "--output", "{tmp}/eps.safetensors"], Failure, "badshape.safetensors", "'x' has shape"),
        new("forward --input with t out of range", ["forward", "--checkpoint", "{run}", "--input", "{badt}", "--output", "{tmp}/eps.safetensors"], Failure, "badt.safetensors", "t[0]", "0..19"),
        new("forward --output is a folder", ["forward", "--checkpoint", "{run}", "--input", "{badt}", "--output", "{emptydir}"], Usage, "--output", "is a folder"),

        // summary and devices.
        new("summary --preset small --size 30", ["summary", "--preset", "small", "--size", "30"], Failure, "--preset small", "divisible"),
        new("summary --channels 0", ["summary", "--channels", "0"], Usage, "--channels"),
        new("devices with an argument", ["devices", "extra"], Usage, "extra"),
    ];

    private string root = null!;
    private Dictionary<string, string> places = null!;

    [OneTimeSetUp]
    public void MakeTheBadInputs()
    {
        root = CliHarness.NewTempFolder("refusals");
        string P(string name) => Path.Combine(root, name);
        places = new() { ["tmp"] = P("scratch") };
        Directory.CreateDirectory(places["tmp"]);
        places["data"] = CliHarness.WriteIdxDataset(P("data"), count: 8, testCount: 4, size: 8);
        places["data6"] = CliHarness.WriteIdxDataset(P("data6"), count: 4, testCount: 2, size: 6);
        places["run"] = P("run");
        var trained = CliHarness.Run("train", "--data", places["data"], "--preset", "tiny", "--batch", "2", "--timesteps", "20", "--sample-every", "0",
            "--checkpoint-every", "2", "--steps", "4", "--seed", "3", "--device", "cpu", "--out", places["run"]);
        Assert.That(trained.ExitCode, Is.Zero, trained.ToString());
        places["file"] = P("plain.txt");
        File.WriteAllText(places["file"], "not a folder");
        places["emptydir"] = Directory.CreateDirectory(P("emptydir")).FullName;

        string CopyRun(string name)
        {
            CliHarness.CopyFolder(places["run"], P(name));
            return places[name] = P(name);
        }
        File.Delete(Path.Combine(CopyRun("noconfig"), "config.json"));
        File.WriteAllText(Path.Combine(CopyRun("badconfig"), "config.json"), "{\"batch\": ");
        string config = File.ReadAllText(Path.Combine(CopyRun("rangeconfig"), "config.json"));
        File.WriteAllText(Path.Combine(places["rangeconfig"], "config.json"), config.Replace("\"batch\": 2", "\"batch\": -2"));
        CopyRun("nocheckpoint");
        File.Delete(Path.Combine(places["nocheckpoint"], Checkpoint.ManifestFile));
        Directory.Delete(Path.Combine(places["nocheckpoint"], Checkpoint.PairsFolder), recursive: true);
        string mixedState = Checkpoint.Locate(CopyRun("mixed")).StateFile!;
        File.Copy(Path.Combine(places["mixed"], Checkpoint.PairsFolder, "step-00000002", Checkpoint.StateFile), mixedState, overwrite: true);
        Directory.Delete(Path.Combine(CopyRun("damaged"), Checkpoint.PairsFolder), recursive: true);
        File.WriteAllText(Path.Combine(CopyRun("badmanifest"), Checkpoint.ManifestFile), "{\"step\": 4}");
        CopyRun("locked");
        File.WriteAllText(Path.Combine(CopyRun("otherrun"), "config.json"), config.Replace(Checkpoint.TryReadManifest(places["run"])!.RunId, "0123456789abcdef0123456789abcdef"));

        places["truncidx"] = CliHarness.WriteIdxDataset(P("truncidx"), count: 4, testCount: 2, size: 8);
        var idx = Path.Combine(places["truncidx"], "train-images-idx3-ubyte");
        File.WriteAllBytes(idx, File.ReadAllBytes(idx)[..100]);
        places["trainonly"] = CliHarness.WriteIdxDataset(P("trainonly"), count: 4, testCount: 2, size: 8);
        File.Delete(Path.Combine(places["trainonly"], "t10k-images-idx3-ubyte"));

        places["badpng"] = Directory.CreateDirectory(P("badpng")).FullName;
        File.WriteAllBytes(Path.Combine(places["badpng"], "broken.png"), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52, 1, 2]);
        places["bomb"] = Directory.CreateDirectory(P("bomb")).FullName;
        File.WriteAllBytes(Path.Combine(places["bomb"], "bomb.png"), PngHeaderOnly(8000, 8000));
        places["corrupt"] = Directory.CreateDirectory(P("corrupt")).FullName;
        File.WriteAllBytes(Path.Combine(places["corrupt"], Checkpoint.ModelFile), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);

        places["nox"] = P("nox.safetensors");
        SafeTensors.Write(places["nox"], [SafeTensor.I64("t", [1], [0])]);
        places["badshape"] = P("badshape.safetensors");
        SafeTensors.Write(places["badshape"], [SafeTensor.F32("x", [1, 1, 4, 4], new float[16]), SafeTensor.I64("t", [1], [0])]);
        places["badt"] = P("badt.safetensors");
        SafeTensors.Write(places["badt"], [SafeTensor.F32("x", [1, 1, 8, 8], new float[64]), SafeTensor.I64("t", [1], [20])]);
    }

    [OneTimeTearDown]
    public void DeleteFolder()
    {
        try { Directory.Delete(root, recursive: true); }
        catch (IOException) { }
    }

    [TestCaseSource(nameof(Table))]
    public void EveryRefusal_IsOneLineNamingTheThing_AndTouchesNothing(Refusal row)
    {
        var args = row.Args.Select(Resolve).ToArray();
        var before = Snapshot();
        using var held = row.Args.Contains("{locked}") ? RunLock.Acquire(places["locked"]) : null;
        CliResult r;
        if (args.Contains("cuda"))
        {
            // The real device factory: the test harness's refuses anything but the CPU.
            if (ComputeDevice.Enumerate().Any(d => d.Kind == DeviceKind.Cuda)) Assert.Ignore("a CUDA device is present here");
            var output = new StringWriter();
            var error = new StringWriter();
            int code = Program.Run(args, output, error);
            r = new CliResult(code, output.ToString(), error.ToString());
        }
        else r = CliHarness.Run(args);

        Assert.That(r.ExitCode, Is.Not.Zero, r.ToString());
        CliHarness.AssertOneLineError(r, row.Exit, row.Mentions.Select(Resolve).ToArray());
        held?.Dispose();
        Assert.That(Snapshot(), Is.EquivalentTo(before), $"{row.Name}: files were written, changed or removed\n{r}");
    }

    private string Resolve(string text)
    {
        foreach (var (key, value) in places) text = text.Replace("{" + key + "}", value);
        return text;
    }

    /// <summary>Every file under the fixture's folder with a hash of its contents (lock files excepted: taking a lock writes them).</summary>
    private List<string> Snapshot() =>
        Directory.GetFiles(root, "*", SearchOption.AllDirectories)
            .Where(f => !Path.GetFileName(f).StartsWith(RunLock.LockFile, StringComparison.Ordinal))
            .Select(f => $"{Path.GetRelativePath(root, f)} {Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f)))}")
            .Concat(Directory.GetDirectories(root, "*", SearchOption.AllDirectories).Select(d => Path.GetRelativePath(root, d) + "/"))
            .ToList();

    /// <summary>The CRC-32 of PNG chunks (ISO 3309, polynomial 0xEDB88320, bit by bit).</summary>
    private static uint Crc32(byte[] bytes)
    {
        uint crc = 0xFFFFFFFF;
        foreach (byte b in bytes)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++) crc = (crc & 1) != 0 ? 0xEDB88320 ^ (crc >> 1) : crc >> 1;
        }
        return ~crc;
    }

    /// <summary>A PNG signature and IHDR chunk claiming <paramref name="width"/>×<paramref name="height"/>, and no pixel data.</summary>
    private static byte[] PngHeaderOnly(int width, int height)
    {
        var ihdr = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(ihdr, width);
        BinaryPrimitives.WriteInt32BigEndian(ihdr.AsSpan(4), height);
        ihdr[8] = 8; ihdr[9] = 2; // 8-bit RGB
        var chunkType = "IHDR"u8.ToArray();
        var crc = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(crc, Crc32([.. chunkType, .. ihdr]));
        return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, .. chunkType, .. ihdr, .. crc, 0, 0, 0, 0, .. "IEND"u8.ToArray(), 0xAE, 0x42, 0x60, 0x82];
    }
}
