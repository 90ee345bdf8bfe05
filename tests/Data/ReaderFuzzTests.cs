using System.Buffers.Binary;
using System.Diagnostics;
using System.IO.Compression;
using System.Text;
using IlgpuDdpm.Cli;
using IlgpuDdpm.Cli.Training;
using IlgpuDdpm.Diffusion.Checkpoints;
using IlgpuDdpm.Diffusion.Data;
using IlgpuDdpm.Tests.Cli;
using NUnit.Framework;
using SixLabors.ImageSharp.PixelFormats;

namespace IlgpuDdpm.Tests.Data;

/// <summary>
/// Issue 11 item 6: every reader of user files, fed 2,000 seeded mutations of a valid file (bit flips,
/// truncations, inserted and deleted runs, and 32/64-bit fields overwritten with huge, negative and
/// overflowing values; for safetensors also negative, overflowing and overlapping offsets and shapes in
/// the JSON header). Each input is accepted or refused with the reader's own one-line exception; anything
/// else fails, as does an input that takes over 2 s or allocates more managed memory than its file size
/// justifies.
/// </summary>
[TestFixture]
public sealed class ReaderFuzzTests
{
    private const int Inputs = 2000;
    private static readonly TimeSpan PerInput = TimeSpan.FromSeconds(2);

    private TempFolder tmp = null!;

    [SetUp] public void SetUp() => tmp = new TempFolder();
    [TearDown] public void TearDown() => tmp.Dispose();

    [Test]
    public void SafeTensors_AcceptsOrRefusesWithCheckpointException()
    {
        string seedFile = tmp.File("seed.safetensors");
        SafeTensors.Write(seedFile, [
            SafeTensor.F32("a.weight", [2, 3], [1, 2, 3, 4, 5, 6]),
            SafeTensor.F32("a.bias", [3], [7, 8, 9]),
            SafeTensor.I64("counter", [], [42]),
        ], new Dictionary<string, string> { ["step"] = "12", ["config"] = "{\"x\":1}" });
        var seed = File.ReadAllBytes(seedFile);
        int headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(seed);
        string header = Encoding.UTF8.GetString(seed, 8, headerLength);
        string path = tmp.File("fuzz.safetensors");
        Fuzz<CheckpointException>(path, 0x5AFE, rng =>
        {
            // Half the inputs mutate the JSON header's numbers (shapes, offsets) and keep the layout valid.
            if (rng.Next(2) == 0) return WithHeader(seed, headerLength, MutateNumbers(header, rng));
            return MutateBytes(seed, rng);
        }, () => SafeTensors.Read(path));
    }

    [TestCase(false, TestName = "Idx_Raw_AcceptsOrRefusesWithDataException")]
    [TestCase(true, TestName = "Idx_Gzip_AcceptsOrRefusesWithDataException")]
    public void Idx_AcceptsOrRefusesWithDataException(bool gzip)
    {
        var raw = new byte[16 + 3 * 4 * 4];
        BinaryPrimitives.WriteInt32BigEndian(raw, IdxReader.ImagesMagic);
        BinaryPrimitives.WriteInt32BigEndian(raw.AsSpan(4), 3);
        BinaryPrimitives.WriteInt32BigEndian(raw.AsSpan(8), 4);
        BinaryPrimitives.WriteInt32BigEndian(raw.AsSpan(12), 4);
        for (int i = 16; i < raw.Length; i++) raw[i] = (byte)(i * 7);
        string path = tmp.File(gzip ? "images.gz" : "images");
        Fuzz<DataException>(path, gzip ? 0x1D59 : 0x1D8, rng =>
        {
            if (!gzip) return MutateBytes(raw, rng);
            // Mutate the IDX inside (a valid gzip of a broken IDX), or the gzip stream itself.
            return rng.Next(2) == 0 ? Gzip(MutateBytes(raw, rng)) : MutateBytes(Gzip(raw), rng);
        }, () => IdxReader.ReadImages(path));
    }

    [Test]
    public void ImageFolder_PngJpegBmp_AcceptsOrRefusesWithDataException()
    {
        string[] extensions = [".png", ".jpg", ".bmp"];
        var seeds = extensions.Select(ext =>
        {
            string file = tmp.File("seed" + ext);
            ImageFolderReaderTests.WriteImage(file, 8, 6, (x, y) => new Rgb24((byte)(x * 30), (byte)(y * 40), (byte)(x * y)));
            return File.ReadAllBytes(file);
        }).ToArray();
        string folder = tmp.Folder("images");
        string current = "";
        Fuzz<DataException>(() => current, 0x1A6E, rng =>
        {
            int format = rng.Next(extensions.Length);
            foreach (var old in Directory.GetFiles(folder)) File.Delete(old);
            current = Path.Combine(folder, "image" + extensions[format]);
            return MutateBytes(seeds[format], rng);
        }, () => ImageFolderReader.Read(folder));
    }

    [Test]
    public void RunConfig_AcceptsOrRefusesWithCliException()
    {
        string path = tmp.File("config.json");
        string seed = new RunConfig { Data = "data", Preset = "tiny", Steps = 10, RunId = "abc", Resumed = ["2026-01-01T00:00:00Z"] }.ToJson();
        var seedBytes = Encoding.UTF8.GetBytes(seed);
        Fuzz<CliException>(path, 0xC0F1, rng => rng.Next(2) == 0 ? Encoding.UTF8.GetBytes(MutateJson(seed, rng)) : MutateBytes(seedBytes, rng),
            () => RunConfig.Load(path));
    }

    // ------------------------------------------------------------------ the harness

    private static void Fuzz<TError>(string path, int seed, Func<Random, byte[]> mutate, Action read) where TError : Exception =>
        Fuzz<TError>(() => path, seed, mutate, read);

    /// <summary>
    /// Writes <see cref="Inputs"/> mutations to the file <paramref name="path"/> names and runs <paramref name="read"/> on
    /// each: it must return or throw <typeparamref name="TError"/> with a one-line message, within 2 s, allocating at most
    /// 64 bytes of managed memory per file byte plus 4 MB.
    /// </summary>
    private static void Fuzz<TError>(Func<string> path, int seed, Func<Random, byte[]> mutate, Action read) where TError : Exception
    {
        var rng = new Random(seed);
        int accepted = 0, refused = 0;
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < Inputs; i++)
        {
            var bytes = mutate(rng);
            string file = path();
            File.WriteAllBytes(file, bytes);
            long allocatedBefore = GC.GetAllocatedBytesForCurrentThread();
            var start = clock.Elapsed;
            try
            {
                read();
                accepted++;
            }
            catch (TError e)
            {
                refused++;
                Assert.That(e.Message, Does.Not.Contain('\n').And.Not.Empty, $"input {i}: {Hex(bytes)}");
            }
            catch (Exception e)
            {
                File.WriteAllBytes(Path.Combine(Path.GetTempPath(), $"ddpm-fuzz-{typeof(TError).Name}-{i}.bin"), bytes);
                Assert.Fail($"input {i} ({bytes.Length} bytes, kept in the temp folder): {e.GetType().Name} instead of {typeof(TError).Name}: {e}\n{Hex(bytes)}");
            }
            var took = clock.Elapsed - start;
            long allocated = GC.GetAllocatedBytesForCurrentThread() - allocatedBefore;
            Assert.That(took, Is.LessThan(PerInput), $"input {i} took {took.TotalSeconds:F2} s: {Hex(bytes)}");
            Assert.That(allocated, Is.LessThan(64L * bytes.Length + (4 << 20)), $"input {i}: {allocated:N0} bytes allocated for a {bytes.Length}-byte file: {Hex(bytes)}");
        }
        TestContext.Out.WriteLine($"{typeof(TError).Name}: {Inputs} inputs, {accepted} accepted, {refused} refused, {clock.Elapsed.TotalSeconds:F1} s");
        Assert.That(refused, Is.GreaterThan(Inputs / 10), "the mutations hardly break anything: the fuzzer is too gentle");
    }

    private static string Hex(byte[] bytes) => Convert.ToHexString(bytes.AsSpan(0, Math.Min(bytes.Length, 96)));

    private static readonly long[] Interesting =
        [0, 1, -1, 2, 255, 256, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, int.MaxValue, int.MinValue, uint.MaxValue, long.MaxValue, long.MinValue, 1L << 32, 1L << 40];

    /// <summary>One to three of: bit flips, a truncation, an inserted or deleted run, a field overwritten with an edge value.</summary>
    private static byte[] MutateBytes(byte[] original, Random rng)
    {
        var bytes = new List<byte>(original);
        int count = 1 + rng.Next(3);
        for (int m = 0; m < count && bytes.Count > 0; m++)
        {
            switch (rng.Next(6))
            {
                case 0: // bit flips
                    for (int k = 1 + rng.Next(8); k > 0; k--) bytes[rng.Next(bytes.Count)] ^= (byte)(1 << rng.Next(8));
                    break;
                case 1: // truncation
                    bytes = bytes.Take(rng.Next(bytes.Count)).ToList();
                    break;
                case 2: // inserted run (random bytes or a copy of another part)
                {
                    int at = rng.Next(bytes.Count + 1), length = 1 + rng.Next(32);
                    var run = new byte[length];
                    if (rng.Next(2) == 0) rng.NextBytes(run);
                    else for (int k = 0; k < length; k++) run[k] = bytes[(at + k * 7) % bytes.Count];
                    bytes.InsertRange(at, run);
                    break;
                }
                case 3: // deleted run
                {
                    int at = rng.Next(bytes.Count), length = Math.Min(bytes.Count - at, 1 + rng.Next(32));
                    bytes.RemoveRange(at, length);
                    break;
                }
                default: // a 16/32/64-bit field overwritten with an edge value, either byte order
                {
                    int width = new[] { 2, 4, 8 }[rng.Next(3)];
                    if (bytes.Count < width) break;
                    int at = rng.Next(bytes.Count - width + 1);
                    // Fields of the formats sit at aligned offsets more often than not.
                    if (rng.Next(2) == 0) at -= at % width;
                    var field = new byte[8];
                    long value = Interesting[rng.Next(Interesting.Length)] + (rng.Next(4) == 0 ? rng.Next(-2, 3) : 0);
                    // The value's low-order bytes, little- or big-endian.
                    bool little = rng.Next(2) == 0;
                    if (little) BinaryPrimitives.WriteInt64LittleEndian(field, value); else BinaryPrimitives.WriteInt64BigEndian(field, value);
                    var span = little ? field.AsSpan(0, width) : field.AsSpan(8 - width, width);
                    for (int k = 0; k < width; k++) bytes[at + k] = span[k];
                    break;
                }
            }
        }
        return [.. bytes];
    }

    private static readonly string[] InterestingNumbers =
        ["0", "-1", "-8", "1", "3", "4", "8", "12", "24", "2147483647", "2147483648", "4294967296", "-2147483649", "9223372036854775807",
         "18446744073709551616", "1e9", "1.5", "99999999999999999999999", "\"4\"", "null", "[]", "{}"];

    /// <summary>Replaces one to three numbers of a JSON text (shapes, offsets, sizes) with edge values, or swaps two.</summary>
    private static string MutateNumbers(string json, Random rng)
    {
        var numbers = System.Text.RegularExpressions.Regex.Matches(json, @"-?\d+").ToList();
        if (numbers.Count == 0) return json;
        var text = new StringBuilder(json);
        var picks = Enumerable.Range(0, 1 + rng.Next(3)).Select(_ => numbers[rng.Next(numbers.Count)]).Distinct().OrderByDescending(m => m.Index).ToList();
        string? swapped = rng.Next(4) == 0 ? numbers[rng.Next(numbers.Count)].Value : null; // another tensor's offset: overlap
        foreach (var m in picks)
            text.Remove(m.Index, m.Length).Insert(m.Index, swapped ?? InterestingNumbers[rng.Next(InterestingNumbers.Length)]);
        return text.ToString();
    }

    /// <summary>A JSON document with a value, key or bracket changed.</summary>
    private static string MutateJson(string json, Random rng)
    {
        string[] replacements = ["null", "-1", "0", "1e309", "\"\"", "\"x\"", "[]", "{}", "true", "99999999999999999999", "{", "]", "\"\\u0000\""];
        var values = System.Text.RegularExpressions.Regex.Matches(json, "(?<=: )(\"[^\"]*\"|-?[0-9.eE+]+|true|false|null|\\[)").ToList();
        if (values.Count == 0 || rng.Next(4) == 0) return MutateNumbers(json, rng);
        var m = values[rng.Next(values.Count)];
        return json.Remove(m.Index, m.Length).Insert(m.Index, replacements[rng.Next(replacements.Length)]);
    }

    private static byte[] WithHeader(byte[] file, int oldHeaderLength, string header)
    {
        var h = Encoding.UTF8.GetBytes(header);
        var result = new byte[8 + h.Length + file.Length - 8 - oldHeaderLength];
        BinaryPrimitives.WriteUInt64LittleEndian(result, (ulong)h.Length);
        h.CopyTo(result, 8);
        file.AsSpan(8 + oldHeaderLength).CopyTo(result.AsSpan(8 + h.Length));
        return result;
    }

    private static byte[] Gzip(byte[] data)
    {
        using var ms = new MemoryStream();
        using (var gz = new GZipStream(ms, CompressionLevel.Fastest)) gz.Write(data);
        return ms.ToArray();
    }
}
