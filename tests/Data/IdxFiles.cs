using System.Buffers.Binary;
using System.IO.Compression;

namespace IlgpuDdpm.Tests.Data;

/// <summary>Writes IDX files for tests, well-formed or deliberately broken.</summary>
internal static class IdxFiles
{
    /// <summary>The bytes of an IDX file: big-endian magic, sizes, data.</summary>
    public static byte[] Build(int magic, int[] dims, byte[] data)
    {
        var bytes = new byte[4 + 4 * dims.Length + data.Length];
        BinaryPrimitives.WriteInt32BigEndian(bytes, magic);
        for (int d = 0; d < dims.Length; d++) BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(4 + 4 * d), dims[d]);
        data.CopyTo(bytes, 4 + 4 * dims.Length);
        return bytes;
    }

    public static byte[] Gzip(byte[] raw)
    {
        using var ms = new MemoryStream();
        using (var gz = new GZipStream(ms, CompressionLevel.Fastest)) gz.Write(raw);
        return ms.ToArray();
    }

    /// <summary>Deterministic pixel bytes: (i·37 + seed) mod 256.</summary>
    public static byte[] Pixels(int n, int seed = 0)
    {
        var b = new byte[n];
        for (int i = 0; i < n; i++) b[i] = (byte)((i * 37 + seed) & 255);
        return b;
    }

    /// <summary>Writes an image file of <paramref name="count"/> images <paramref name="rows"/>×<paramref name="cols"/>; returns its pixels.</summary>
    public static byte[] WriteImages(string path, int count, int rows, int cols, bool gzip = false, int seed = 0)
    {
        var pixels = Pixels(count * rows * cols, seed);
        var raw = Build(0x803, [count, rows, cols], pixels);
        File.WriteAllBytes(path, gzip ? Gzip(raw) : raw);
        return pixels;
    }
}
