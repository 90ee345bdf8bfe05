using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace IlgpuDdpm.Diffusion.Checkpoints;

/// <summary>Element types this reader and writer handle (safetensors' dtype names).</summary>
public enum SafeTensorDType
{
    /// <summary>IEEE-754 float32.</summary>
    F32,

    /// <summary>Signed 64-bit integer.</summary>
    I64,

    /// <summary>Signed 32-bit integer.</summary>
    I32,
}

/// <summary>
/// One named tensor of a safetensors file: its shape, dtype and data (exactly one of
/// <see cref="Floats"/>, <see cref="Longs"/>, <see cref="Ints"/> is set, by <see cref="DType"/>).
/// </summary>
public sealed class SafeTensor
{
    private SafeTensor(string name, int[] shape, SafeTensorDType dtype, Array data)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(shape);
        long count = 1;
        foreach (int d in shape)
        {
            if (d < 0) throw new ArgumentException($"tensor '{name}': shape [{string.Join(", ", shape)}] has a negative dimension");
            count *= d;
            if (count > Array.MaxLength) throw new ArgumentException($"tensor '{name}': shape [{string.Join(", ", shape)}] is too large");
        }
        if (count != data.LongLength)
            throw new ArgumentException($"tensor '{name}': shape [{string.Join(", ", shape)}] holds {count} elements but the data has {data.LongLength}");
        Name = name;
        Shape = (int[])shape.Clone();
        DType = dtype;
        Data = data;
    }

    /// <summary>A float32 tensor.</summary>
    public static SafeTensor F32(string name, int[] shape, float[] data) => new(name, shape, SafeTensorDType.F32, data ?? throw new ArgumentNullException(nameof(data)));

    /// <summary>A 64-bit integer tensor.</summary>
    public static SafeTensor I64(string name, int[] shape, long[] data) => new(name, shape, SafeTensorDType.I64, data ?? throw new ArgumentNullException(nameof(data)));

    /// <summary>A 32-bit integer tensor.</summary>
    public static SafeTensor I32(string name, int[] shape, int[] data) => new(name, shape, SafeTensorDType.I32, data ?? throw new ArgumentNullException(nameof(data)));

    /// <summary>The tensor's name (a dotted PyTorch-style parameter name for weights).</summary>
    public string Name { get; }

    /// <summary>The shape; empty for a scalar.</summary>
    public int[] Shape { get; }

    /// <summary>The element type.</summary>
    public SafeTensorDType DType { get; }

    /// <summary>The data array: float[], long[] or int[].</summary>
    public Array Data { get; }

    /// <summary>Number of elements: the product of the shape.</summary>
    public int ElementCount => Data.Length;

    /// <summary>The data when <see cref="DType"/> is F32, else null.</summary>
    public float[]? Floats => Data as float[];

    /// <summary>The data when <see cref="DType"/> is I64, else null.</summary>
    public long[]? Longs => Data as long[];

    /// <summary>The data when <see cref="DType"/> is I32, else null.</summary>
    public int[]? Ints => Data as int[];

    /// <summary>Bytes per element of <paramref name="dtype"/>.</summary>
    public static int SizeOf(SafeTensorDType dtype) => dtype switch
    {
        SafeTensorDType.F32 => 4,
        SafeTensorDType.I32 => 4,
        SafeTensorDType.I64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    /// <summary>Shape as text, e.g. <c>[16, 1, 3, 3]</c>.</summary>
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";

    internal Span<byte> Bytes => Data switch
    {
        float[] f => MemoryMarshal.AsBytes(f.AsSpan()),
        long[] l => MemoryMarshal.AsBytes(l.AsSpan()),
        int[] i => MemoryMarshal.AsBytes(i.AsSpan()),
        _ => throw new InvalidOperationException("unknown data array"),
    };
}

/// <summary>What <see cref="SafeTensors.Read"/> returns: the tensors (in file order) and the metadata.</summary>
public sealed class SafeTensorFile
{
    internal SafeTensorFile(string path, IReadOnlyList<SafeTensor> ordered, IReadOnlyDictionary<string, string> metadata)
    {
        Path = path;
        InFileOrder = ordered;
        var byName = new Dictionary<string, SafeTensor>(ordered.Count, StringComparer.Ordinal);
        foreach (var t in ordered) byName[t.Name] = t;
        Tensors = byName;
        Metadata = metadata;
    }

    /// <summary>The file read.</summary>
    public string Path { get; }

    /// <summary>Tensors by name.</summary>
    public IReadOnlyDictionary<string, SafeTensor> Tensors { get; }

    /// <summary>Tensors in the order of their data in the file.</summary>
    public IReadOnlyList<SafeTensor> InFileOrder { get; }

    /// <summary>The <c>__metadata__</c> strings (empty when the file has none).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>
    /// The float32 data of tensor <paramref name="name"/>, checked to have <paramref name="shape"/> when given;
    /// a <see cref="CheckpointException"/> naming the file otherwise.
    /// </summary>
    public float[] GetFloats(string name, int[]? shape = null)
    {
        if (!Tensors.TryGetValue(name, out var t))
            throw new CheckpointException($"{Path}: has no tensor '{name}'");
        if (t.DType != SafeTensorDType.F32)
            throw new CheckpointException($"{Path}: tensor '{name}' is {t.DType}; expected F32");
        if (shape is not null && !shape.AsSpan().SequenceEqual(t.Shape))
            throw new CheckpointException($"{Path}: tensor '{name}' has shape {t.ShapeText}; expected [{string.Join(", ", shape)}]");
        return t.Floats!;
    }

    /// <summary>Metadata value <paramref name="key"/>; a <see cref="CheckpointException"/> naming the file when absent.</summary>
    public string GetMetadata(string key) =>
        Metadata.TryGetValue(key, out var v) ? v : throw new CheckpointException($"{Path}: metadata has no '{key}'");
}

/// <summary>
/// Reads and writes <a href="https://huggingface.co/docs/safetensors">safetensors</a> files: an 8-byte
/// little-endian unsigned header length N, N bytes of UTF-8 JSON
/// (<c>{"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {"key": "value"}}</c>,
/// padded with spaces to a multiple of 8), then the tensors' raw little-endian bytes, offsets relative
/// to the end of the header. Writes go to a temporary file in the same folder that is flushed to disk and
/// then renamed over the target, so a crash never leaves a half-written checkpoint. Reads validate
/// everything and report the first problem as a one-line <see cref="CheckpointException"/>.
/// </summary>
public static class SafeTensors
{
    /// <summary>Largest header accepted (as in the reference implementation: 100 MB).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    /// <summary>The reserved header key of the string-to-string metadata.</summary>
    public const string MetadataKey = "__metadata__";

    // dtype names safetensors defines; those not in SafeTensorDType are "known but unsupported".
    private static readonly HashSet<string> OtherKnownDTypes =
        ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "I16", "U16", "F16", "BF16", "U32", "F64", "U64", "C64"];

    /// <summary>Writes float32 tensors (in the given order) and <paramref name="metadata"/> to <paramref name="path"/>.</summary>
    public static void Write(string path, IReadOnlyList<(string Name, int[] Shape, float[] Data)> tensors,
                             IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var list = new List<SafeTensor>(tensors.Count);
        foreach (var (name, shape, data) in tensors)
        {
            try { list.Add(SafeTensor.F32(name, shape, data)); }
            catch (ArgumentException e) { throw new CheckpointException($"{path}: cannot write: {e.Message}", e); }
        }
        Write(path, list, metadata);
    }

    /// <summary>Writes <paramref name="tensors"/> (any supported dtype, in the given order) and <paramref name="metadata"/> to <paramref name="path"/>.</summary>
    public static void Write(string path, IReadOnlyList<SafeTensor> tensors, IReadOnlyDictionary<string, string>? metadata = null) =>
        Write(path, tensors, metadata, create: null);

    /// <summary>Writes through <paramref name="create"/> (which opens the temporary file; tests pass a stream that fails halfway).</summary>
    internal static void Write(string path, IReadOnlyList<SafeTensor> tensors, IReadOnlyDictionary<string, string>? metadata, Func<string, Stream>? create)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(tensors);
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in tensors)
        {
            if (t.Name == MetadataKey) throw new CheckpointException($"{path}: cannot write: '{MetadataKey}' is reserved and cannot name a tensor");
            if (!names.Add(t.Name)) throw new CheckpointException($"{path}: cannot write: tensor name '{t.Name}' appears twice");
        }

        byte[] header = BuildHeader(tensors, metadata);
        string full = System.IO.Path.GetFullPath(path);
        string folder = System.IO.Path.GetDirectoryName(full)!;
        string temp = System.IO.Path.Combine(folder, $".{System.IO.Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            Directory.CreateDirectory(folder);
            using (var f = create?.Invoke(temp) ?? new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                Span<byte> len = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)header.Length);
                f.Write(len);
                f.Write(header);
                foreach (var t in tensors) WriteLittleEndian(f, t);
                if (f is FileStream file) file.Flush(flushToDisk: true); else f.Flush();
            }
            File.Move(temp, full, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            TryDelete(temp);
            throw new CheckpointException($"{path}: cannot write ({e.Message})", e);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
    }

    /// <summary>Reads and validates a whole file.</summary>
    public static SafeTensorFile Read(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path)) throw new CheckpointException($"{path}: file not found");
        try
        {
            using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
            var (entries, metadata, dataStart) = ReadHeader(path, f);
            var tensors = new List<SafeTensor>(entries.Count);
            foreach (var e in entries)
            {
                f.Position = dataStart + e.Begin;
                SafeTensor t = e.DType switch
                {
                    SafeTensorDType.F32 => SafeTensor.F32(e.Name, e.Shape, new float[e.Count]),
                    SafeTensorDType.I64 => SafeTensor.I64(e.Name, e.Shape, new long[e.Count]),
                    _ => SafeTensor.I32(e.Name, e.Shape, new int[e.Count]),
                };
                var bytes = t.Bytes;
                f.ReadExactly(bytes);
                if (!BitConverter.IsLittleEndian) SwapBytes(t);
                tensors.Add(t);
            }
            return new SafeTensorFile(path, tensors, metadata);
        }
        catch (EndOfStreamException e)
        {
            throw new CheckpointException($"{path}: truncated while reading tensor data", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CheckpointException($"{path}: cannot read ({e.Message})", e);
        }
    }

    /// <summary>Reads and validates only the header: the metadata and each tensor's name, dtype and shape (no data).</summary>
    public static (IReadOnlyList<(string Name, SafeTensorDType DType, int[] Shape)> Tensors, IReadOnlyDictionary<string, string> Metadata) ReadHeader(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path)) throw new CheckpointException($"{path}: file not found");
        try
        {
            using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
            var (entries, metadata, _) = ReadHeader(path, f);
            return (entries.Select(e => (e.Name, e.DType, e.Shape)).ToList(), metadata);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CheckpointException($"{path}: cannot read ({e.Message})", e);
        }
    }

    private sealed record Entry(string Name, SafeTensorDType DType, int[] Shape, int Count, long Begin, long End);

    // Parses and validates the header; entries are sorted by offset and tile the data section exactly.
    private static (List<Entry> Entries, Dictionary<string, string> Metadata, long DataStart) ReadHeader(string path, FileStream f)
    {
        long fileLength = f.Length;
        if (fileLength < 8)
            throw new CheckpointException($"{path}: file is {fileLength} bytes, too short for a safetensors header (8-byte length + JSON)");
        Span<byte> lenBytes = stackalloc byte[8];
        f.ReadExactly(lenBytes);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(lenBytes);
        if (headerLength > (ulong)(fileLength - 8))
            throw new CheckpointException($"{path}: header length {headerLength} exceeds the {fileLength - 8} bytes after the length field (truncated or not a safetensors file)");
        if (headerLength > MaxHeaderBytes)
            throw new CheckpointException($"{path}: header length {headerLength} exceeds the {MaxHeaderBytes}-byte limit");
        if (headerLength < 2)
            throw new CheckpointException($"{path}: header length {headerLength} is too short for a JSON object");
        var header = new byte[headerLength];
        f.ReadExactly(header);
        long dataStart = 8 + (long)headerLength;
        long dataLength = fileLength - dataStart;

        // The JSON reader checks UTF-8 only where it reads a string's value, after parsing; refuse bad bytes first.
        if (!System.Text.Unicode.Utf8.IsValid(header))
            throw new CheckpointException($"{path}: header is not valid UTF-8 text");
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(header, new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            throw new CheckpointException($"{path}: header is not valid JSON ({OneLine(e.Message)})", e);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new CheckpointException($"{path}: header is a JSON {doc.RootElement.ValueKind}; expected an object");
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var entries = new List<Entry>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (!seen.Add(prop.Name))
                    throw new CheckpointException($"{path}: header names '{prop.Name}' twice");
                if (prop.Name == MetadataKey)
                {
                    if (prop.Value.ValueKind != JsonValueKind.Object)
                        throw new CheckpointException($"{path}: '{MetadataKey}' is a JSON {prop.Value.ValueKind}; expected an object of strings");
                    foreach (var m in prop.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String)
                            throw new CheckpointException($"{path}: metadata '{m.Name}' is a JSON {m.Value.ValueKind}; expected a string");
                        if (!metadata.TryAdd(m.Name, m.Value.GetString()!))
                            throw new CheckpointException($"{path}: metadata names '{m.Name}' twice");
                    }
                    continue;
                }
                if (prop.Name.Length == 0) throw new CheckpointException($"{path}: header has a tensor with an empty name");
                entries.Add(ParseEntry(path, prop.Name, prop.Value));
            }

            // Sorted by offset, the tensors must tile [0, dataLength) with no gap and no overlap.
            entries.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
            long expect = 0;
            string? previous = null;
            foreach (var e in entries)
            {
                if (e.End > dataLength)
                    throw new CheckpointException($"{path}: tensor '{e.Name}' data_offsets [{e.Begin}, {e.End}] run past the {dataLength}-byte data section (file truncated?)");
                if (e.Begin < expect)
                    throw new CheckpointException($"{path}: tensor '{e.Name}' data_offsets [{e.Begin}, {e.End}] overlap tensor '{previous}' (which ends at {expect})");
                if (e.Begin > expect)
                    throw new CheckpointException($"{path}: tensor '{e.Name}' starts at {e.Begin}, leaving a gap after {(previous is null ? "the header" : $"tensor '{previous}'")} (which ends at {expect})");
                expect = e.End;
                previous = e.Name;
            }
            if (expect != dataLength)
                throw new CheckpointException($"{path}: the tensors cover {expect} bytes but the data section is {dataLength} bytes");
            return (entries, metadata, dataStart);
        }
    }

    private static Entry ParseEntry(string path, string name, JsonElement v)
    {
        if (v.ValueKind != JsonValueKind.Object)
            throw new CheckpointException($"{path}: tensor '{name}' is a JSON {v.ValueKind}; expected {{\"dtype\", \"shape\", \"data_offsets\"}}");
        if (!v.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String)
            throw new CheckpointException($"{path}: tensor '{name}' has no string \"dtype\"");
        string dtName = dt.GetString()!;
        SafeTensorDType dtype = dtName switch
        {
            "F32" => SafeTensorDType.F32,
            "I64" => SafeTensorDType.I64,
            "I32" => SafeTensorDType.I32,
            _ when OtherKnownDTypes.Contains(dtName) =>
                throw new CheckpointException($"{path}: tensor '{name}' has dtype {dtName}, which this reader does not handle (expected F32, I64 or I32)"),
            _ => throw new CheckpointException($"{path}: tensor '{name}' has unknown dtype '{dtName}' (expected F32, I64 or I32)"),
        };

        if (!v.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array)
            throw new CheckpointException($"{path}: tensor '{name}' has no \"shape\" array");
        var shape = new int[sh.GetArrayLength()];
        long count = 1;
        int k = 0;
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt32(out int dim) || dim < 0)
                throw new CheckpointException($"{path}: tensor '{name}' shape entry {k} is {d.GetRawText()}; expected a non-negative 32-bit integer");
            shape[k++] = dim;
            count *= dim;
            if (count > Array.MaxLength)
                throw new CheckpointException($"{path}: tensor '{name}' shape {sh.GetRawText()} has more than {Array.MaxLength} elements");
        }

        if (!v.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw new CheckpointException($"{path}: tensor '{name}' has no \"data_offsets\" [begin, end]");
        var o0 = off[0];
        var o1 = off[1];
        if (o0.ValueKind != JsonValueKind.Number || !o0.TryGetInt64(out long begin) || begin < 0 ||
            o1.ValueKind != JsonValueKind.Number || !o1.TryGetInt64(out long end) || end < 0)
            throw new CheckpointException($"{path}: tensor '{name}' data_offsets {off.GetRawText()}; expected two non-negative integers");
        if (end < begin)
            throw new CheckpointException($"{path}: tensor '{name}' data_offsets [{begin}, {end}] end before they begin");
        long bytes = count * SafeTensor.SizeOf(dtype);
        if (end - begin != bytes)
            throw new CheckpointException($"{path}: tensor '{name}' data_offsets [{begin}, {end}] span {end - begin} bytes; shape {sh.GetRawText()} of {dtName} needs {bytes}");
        return new Entry(name, dtype, shape, (int)count, begin, end);
    }

    private static byte[] BuildHeader(IReadOnlyList<SafeTensor> tensors, IReadOnlyDictionary<string, string>? metadata)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject(MetadataKey);
                foreach (var (k, val) in metadata.OrderBy(p => p.Key, StringComparer.Ordinal))
                    w.WriteString(k, val ?? throw new ArgumentException($"metadata '{k}' is null"));
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var t in tensors)
            {
                long size = (long)t.ElementCount * SafeTensor.SizeOf(t.DType);
                w.WriteStartObject(t.Name);
                w.WriteString("dtype", t.DType.ToString());
                w.WriteStartArray("shape");
                foreach (int d in t.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + size);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += size;
            }
            w.WriteEndObject();
        }
        // Pad with spaces so the data starts 8-byte aligned (what the reference writer does).
        int padded = (int)((ms.Length + 7) / 8 * 8);
        while (ms.Length < padded) ms.WriteByte((byte)' ');
        return ms.ToArray();
    }

    private static void WriteLittleEndian(Stream f, SafeTensor t)
    {
        if (BitConverter.IsLittleEndian) { f.Write(t.Bytes); return; }
        var copy = t.Bytes.ToArray();
        SwapBytes(copy, SafeTensor.SizeOf(t.DType));
        f.Write(copy);
    }

    private static void SwapBytes(SafeTensor t) => SwapBytes(t.Bytes, SafeTensor.SizeOf(t.DType));

    private static void SwapBytes(Span<byte> bytes, int size)
    {
        for (int i = 0; i < bytes.Length; i += size) bytes.Slice(i, size).Reverse();
    }

    private static void TryDelete(string path)
    {
        try { if (File.Exists(path)) File.Delete(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    private static string OneLine(string s) => s.ReplaceLineEndings(" ").Trim();
}
