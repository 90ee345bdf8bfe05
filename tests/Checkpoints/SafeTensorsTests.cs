using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using IlgpuDdpm.Diffusion.Checkpoints;
using IlgpuDdpm.Tests.Data;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Checkpoints;

[TestFixture]
public sealed class SafeTensorsTests
{
    private TempFolder tmp = null!;

    [SetUp] public void SetUp() => tmp = new TempFolder();
    [TearDown] public void TearDown() => tmp.Dispose();

    private static float Bits(uint b) => BitConverter.Int32BitsToSingle((int)b);

    [Test]
    public void RoundTripIsBitExactWithMetadata()
    {
        string path = tmp.File("model.safetensors");
        var special = new[] { 0f, -0f, 1f, -2.5f, float.Epsilon, -float.Epsilon, float.MaxValue, float.PositiveInfinity,
                              float.NegativeInfinity, Bits(0x7FC00001), Bits(0xFFA00000), 1e-40f };
        var conv = TestData.Uniform(16 * 3 * 3 * 3, seed: 1);
        var metadata = new Dictionary<string, string>
        {
            ["config"] = "{\"preset\": \"tiny\", \"ch\": 16, \"mult\": [1, 2]}",
            ["step"] = "1234",
            ["note"] = "ünïcödé \"quotes\" \\ back\nslash",
        };
        SafeTensors.Write(path, [
            ("head.weight", [16, 3, 3, 3], conv),
            ("special", [3, 4], special),
            ("scalar", [], [3.25f]),
            ("empty", [0, 5], []),
        ], metadata);

        var file = SafeTensors.Read(path);
        Assert.That(file.Tensors.Keys, Is.EquivalentTo(new[] { "head.weight", "special", "scalar", "empty" }));
        Assert.That(file.InFileOrder.Select(t => t.Name), Is.EqualTo(new[] { "head.weight", "special", "scalar", "empty" }));
        Check.BitIdentical(file.GetFloats("head.weight", [16, 3, 3, 3]), conv, "head.weight");
        Check.BitIdentical(file.GetFloats("special"), special, "special values incl. NaN payloads and −0");
        Assert.That(file.Tensors["special"].Shape, Is.EqualTo(new[] { 3, 4 }));
        Assert.That(file.Tensors["scalar"].Shape, Is.Empty);
        Assert.That(file.GetFloats("scalar"), Is.EqualTo(new[] { 3.25f }));
        Assert.That(file.Tensors["empty"].Shape, Is.EqualTo(new[] { 0, 5 }));
        Assert.That(file.Tensors["empty"].ElementCount, Is.Zero);
        Assert.That(file.Metadata, Is.EquivalentTo(metadata));
        Assert.That(file.GetMetadata("step"), Is.EqualTo("1234"));

        var header = SafeTensors.ReadHeader(path);
        Assert.That(header.Tensors.Select(t => t.Name), Is.EqualTo(new[] { "head.weight", "special", "scalar", "empty" }));
        Assert.That(header.Metadata, Is.EquivalentTo(metadata));
    }

    [Test]
    public void IntegerTensorsRoundTrip()
    {
        string path = tmp.File("state.safetensors");
        var longs = new[] { long.MinValue, -1L, 0L, 1L << 40, long.MaxValue };
        var ints = new[] { int.MinValue, -7, 0, 123456, int.MaxValue, 5 };
        SafeTensors.Write(path, [SafeTensor.I64("offsets", [5], longs), SafeTensor.F32("w", [1], [0.5f]), SafeTensor.I32("pos", [2, 3], ints)]);
        var file = SafeTensors.Read(path);
        Assert.That(file.Tensors["offsets"].DType, Is.EqualTo(SafeTensorDType.I64));
        Assert.That(file.Tensors["offsets"].Longs, Is.EqualTo(longs));
        Assert.That(file.Tensors["pos"].DType, Is.EqualTo(SafeTensorDType.I32));
        Assert.That(file.Tensors["pos"].Ints, Is.EqualTo(ints));
        Assert.That(file.Metadata, Is.Empty);
        var e = Assert.Throws<CheckpointException>(() => file.GetFloats("pos"))!;
        Assert.That(e.Message, Does.Contain("I32").And.Contain("F32"));
    }

    [Test]
    public void LayoutIsTheSafetensorsFormat()
    {
        string path = tmp.File("a.safetensors");
        SafeTensors.Write(path, [("a", [2], [1f, -2f]), ("b", [1], [0.5f])], new Dictionary<string, string> { ["k"] = "v" });
        var bytes = File.ReadAllBytes(path);
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.That(n % 8, Is.Zero, "header padded to 8 bytes");
        Assert.That((ulong)bytes.Length, Is.EqualTo(8 + n + 12));
        string json = Encoding.UTF8.GetString(bytes, 8, (int)n);
        using var doc = JsonDocument.Parse(json);
        var a = doc.RootElement.GetProperty("a");
        Assert.That(a.GetProperty("dtype").GetString(), Is.EqualTo("F32"));
        Assert.That(a.GetProperty("shape").EnumerateArray().Select(x => x.GetInt32()), Is.EqualTo(new[] { 2 }));
        Assert.That(a.GetProperty("data_offsets").EnumerateArray().Select(x => x.GetInt64()), Is.EqualTo(new long[] { 0, 8 }));
        Assert.That(doc.RootElement.GetProperty("b").GetProperty("data_offsets").EnumerateArray().Select(x => x.GetInt64()), Is.EqualTo(new long[] { 8, 12 }));
        Assert.That(doc.RootElement.GetProperty("__metadata__").GetProperty("k").GetString(), Is.EqualTo("v"));
        // 1.0f = 0x3F800000, −2.0f = 0xC0000000, 0.5f = 0x3F000000, little-endian.
        Assert.That(bytes.AsSpan(8 + (int)n).ToArray(), Is.EqualTo(new byte[] { 0, 0, 0x80, 0x3F, 0, 0, 0, 0xC0, 0, 0, 0, 0x3F }));
    }

    [Test]
    public void ReadsAFileWrittenByHandInAnotherOrder()
    {
        // Header keys in reverse data order, unpadded, with whitespace — as another writer may produce.
        string json = "{ \"z\" : {\"dtype\":\"F32\", \"shape\":[1], \"data_offsets\":[8, 12]},\n \"y\": {\"shape\":[2],\"dtype\":\"I32\",\"data_offsets\":[0,8]} }";
        var path = WriteRaw("hand.safetensors", json, [1, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0xC0, 0x7F]);
        var file = SafeTensors.Read(path);
        Assert.That(file.Tensors["y"].Ints, Is.EqualTo(new[] { 1, -1 }));
        Assert.That(float.IsNaN(file.GetFloats("z")[0]), Is.True);
        Assert.That(file.InFileOrder.Select(t => t.Name), Is.EqualTo(new[] { "y", "z" }));
    }

    [Test]
    public void OverwritesAtomicallyAndLeavesNoTemporaryFile()
    {
        string path = tmp.File("ckpt/model.safetensors"); // the folder is created
        SafeTensors.Write(path, [("w", [2], [1f, 2f])]);
        SafeTensors.Write(path, [("w", [3], [3f, 4f, 5f])]);
        Assert.That(SafeTensors.Read(path).GetFloats("w"), Is.EqualTo(new[] { 3f, 4f, 5f }));
        Assert.That(Directory.GetFiles(Path.GetDirectoryName(path)!), Is.EqualTo(new[] { path }), "only the checkpoint remains");

        // A write refused part-way (bad tensor) leaves the previous file untouched and no temporary file.
        var before = File.ReadAllBytes(path);
        Assert.Throws<CheckpointException>(() => SafeTensors.Write(path, [("ok", [1], [1f]), ("bad", [2, 2], [1f, 2f, 3f])]));
        Assert.Throws<CheckpointException>(() => SafeTensors.Write(path, [("w", [1], [1f]), ("w", [1], [2f])]));
        Assert.Throws<CheckpointException>(() => SafeTensors.Write(path, [("__metadata__", [1], [1f])]));
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(before));
        Assert.That(Directory.GetFiles(Path.GetDirectoryName(path)!), Is.EqualTo(new[] { path }));
    }

    private string WriteRaw(string name, string json, byte[] data, ulong? claimedLength = null)
    {
        var header = Encoding.UTF8.GetBytes(json);
        var bytes = new byte[8 + header.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, claimedLength ?? (ulong)header.Length);
        header.CopyTo(bytes, 8);
        data.CopyTo(bytes, 8 + header.Length);
        string path = tmp.File(name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static void AssertRefused(string path, params string[] fragments)
    {
        var e = Assert.Throws<CheckpointException>(() => SafeTensors.Read(path))!;
        Assert.That(e.Message, Does.StartWith(path), "the message names the file");
        foreach (var f in fragments) Assert.That(e.Message, Does.Contain(f));
        Assert.That(e.Message, Does.Not.Contain('\n'), "one line");
    }

    [Test]
    public void RefusesATruncatedFile()
    {
        string path = tmp.File("t.safetensors");
        SafeTensors.Write(path, [("a", [4], [1f, 2f, 3f, 4f]), ("b", [4], [5f, 6f, 7f, 8f])]);
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes.AsSpan(0, bytes.Length - 3).ToArray());
        AssertRefused(path, "'b'", "run past", "truncated");
        File.WriteAllBytes(path, bytes.AsSpan(0, 40).ToArray()); // cut inside the header
        AssertRefused(path, "header length");
        File.WriteAllBytes(path, bytes.AsSpan(0, 5).ToArray());
        AssertRefused(path, "too short");
    }

    [Test]
    public void RefusesABadHeaderLength()
    {
        AssertRefused(WriteRaw("huge.safetensors", "{}", [], claimedLength: 1UL << 62), "header length 4611686018427387904", "exceeds");
        AssertRefused(WriteRaw("zero.safetensors", "{}", [], claimedLength: 0), "header length 0");
    }

    [Test]
    public void RefusesBadJson()
    {
        AssertRefused(WriteRaw("bad.safetensors", "{\"a\": {\"dtype\": \"F32\", ", []), "not valid JSON");
        AssertRefused(WriteRaw("arr.safetensors", "[1, 2]", []), "expected an object");
        AssertRefused(WriteRaw("dup.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", new byte[8]), "'a' twice");
        AssertRefused(WriteRaw("meta.safetensors", "{\"__metadata__\":{\"step\":5}}", []), "metadata 'step'", "expected a string");
        AssertRefused(WriteRaw("noshape.safetensors", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", new byte[4]), "'a'", "shape");
    }

    [Test]
    public void RefusesOffsetsOutOfRangeOrInconsistent()
    {
        AssertRefused(WriteRaw("past.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", new byte[4]), "'a'", "[0, 8]", "run past");
        AssertRefused(WriteRaw("neg.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", new byte[4]), "'a'", "non-negative");
        AssertRefused(WriteRaw("size.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", new byte[8]), "'a'", "needs 12");
        AssertRefused(WriteRaw("overlap.safetensors",
            "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", new byte[12]),
            "'b'", "overlap");
        AssertRefused(WriteRaw("gap.safetensors",
            "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", new byte[12]),
            "'b'", "gap");
        AssertRefused(WriteRaw("tail.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", new byte[9]), "cover 4 bytes", "9 bytes");
        AssertRefused(WriteRaw("rev.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", new byte[4]), "end before");
    }

    [Test]
    public void RefusesUnknownOrUnsupportedDtypes()
    {
        AssertRefused(WriteRaw("f16.safetensors", "{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", new byte[4]), "F16", "does not handle");
        AssertRefused(WriteRaw("x.safetensors", "{\"a\":{\"dtype\":\"Q7\",\"shape\":[2],\"data_offsets\":[0,4]}}", new byte[4]), "unknown dtype 'Q7'");
    }

    [Test]
    public void MissingFileAndShapeMismatchAreClearLines()
    {
        string missing = tmp.File("none.safetensors");
        AssertRefused(missing, "not found");
        string path = tmp.File("m.safetensors");
        SafeTensors.Write(path, [("w", [2, 2], [1f, 2f, 3f, 4f])]);
        var file = SafeTensors.Read(path);
        var e = Assert.Throws<CheckpointException>(() => file.GetFloats("w", [4]))!;
        Assert.That(e.Message, Does.Contain("[2, 2]").And.Contain("[4]").And.Contain(path));
        Assert.That(Assert.Throws<CheckpointException>(() => file.GetFloats("v"))!.Message, Does.Contain("no tensor 'v'"));
        Assert.That(Assert.Throws<CheckpointException>(() => file.GetMetadata("config"))!.Message, Does.Contain("'config'"));
    }
}
