using System.Buffers.Binary;
using System.IO.Compression;

namespace IlgpuDdpm.Diffusion.Data;

/// <summary>
/// Reads the IDX files of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/, "file formats"):
/// a big-endian header — magic <c>00 00 08 D</c> (unsigned bytes, <c>D</c> dimensions), then D 32-bit sizes —
/// followed by the bytes themselves. Images are <c>0x00000803</c> (count, rows, cols), labels
/// <c>0x00000801</c> (count). The file may be raw or gzip-compressed; which one is decided by its first
/// two bytes (<c>1f 8b</c>), never by its name. The (decompressed) length must match the header exactly.
/// Every problem is a <see cref="DataException"/> with one line naming the file.
/// </summary>
public static class IdxReader
{
    /// <summary>Magic number of an IDX image file (unsigned bytes, 3 dimensions).</summary>
    public const int ImagesMagic = 0x00000803;

    /// <summary>Magic number of an IDX label file (unsigned bytes, 1 dimension).</summary>
    public const int LabelsMagic = 0x00000801;

    /// <summary>Largest image side accepted from an IDX header.</summary>
    public const int MaxSide = 8192;

    /// <summary>DEFLATE's largest compression ratio: a gzip file of n bytes inflates to at most about 1032·n.</summary>
    public const long MaxGzipRatio = 1032;

    /// <summary>Reads an IDX image file into grayscale <see cref="ByteImages"/> <c>[count, 1, rows, cols]</c>.</summary>
    public static ByteImages ReadImages(string path)
    {
        var (dims, data) = Read(path, expectedDimensions: 3);
        int count = dims[0], rows = dims[1], cols = dims[2];
        if (rows == 0 || cols == 0)
            throw new DataException($"{path}: IDX image size is {rows}x{cols}; expected positive rows and columns");
        if (rows > MaxSide || cols > MaxSide)
            throw new DataException($"{path}: IDX image size {rows}x{cols} exceeds {MaxSide} on a side");
        return new ByteImages(data, count, 1, rows, cols);
    }

    /// <summary>Reads an IDX label file: one byte per item.</summary>
    public static byte[] ReadLabels(string path) => Read(path, expectedDimensions: 1).Data;

    /// <summary>True when the file starts with the gzip magic bytes <c>1f 8b</c>.</summary>
    public static bool IsGzip(string path)
    {
        using var f = File.OpenRead(path);
        Span<byte> b = stackalloc byte[2];
        return f.Read(b) == 2 && b[0] == 0x1f && b[1] == 0x8b;
    }

    /// <summary>True when the file (raw or gzip) starts with the IDX magic of an image file.</summary>
    public static bool LooksLikeImages(string path)
    {
        try
        {
            using var s = Open(path);
            Span<byte> magic = stackalloc byte[4];
            return ReadUpTo(s, magic) == 4 && BinaryPrimitives.ReadInt32BigEndian(magic) == ImagesMagic;
        }
        catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>
    /// Reads an unsigned-byte IDX file with <paramref name="expectedDimensions"/> dimensions: its sizes and
    /// its data. The data length must be exactly the product of the sizes: a short file is "truncated", a
    /// long one has "trailing bytes".
    /// </summary>
    public static (int[] Dims, byte[] Data) Read(string path, int expectedDimensions)
    {
        if (!File.Exists(path)) throw new DataException($"{path}: file not found");
        try
        {
            using var s = Open(path);
            Span<byte> head = stackalloc byte[4];
            int got = ReadUpTo(s, head);
            if (got < 4) throw new DataException($"{path}: truncated: {got} bytes, too short for an IDX header");
            int magic = BinaryPrimitives.ReadInt32BigEndian(head);
            if (head[0] != 0 || head[1] != 0)
                throw new DataException($"{path}: not an IDX file (magic 0x{magic:X8}; expected 0x{0x800 | expectedDimensions:X8})");
            if (head[2] != 0x08)
                throw new DataException($"{path}: IDX data type 0x{head[2]:X2} is not supported (magic 0x{magic:X8}; expected unsigned bytes, 0x{0x800 | expectedDimensions:X8})");
            if (head[3] != expectedDimensions)
                throw new DataException($"{path}: IDX file has {head[3]} dimension(s) (magic 0x{magic:X8}); expected {expectedDimensions} (magic 0x{0x800 | expectedDimensions:X8})");

            var sizeBytes = new byte[4 * expectedDimensions];
            got = ReadUpTo(s, sizeBytes);
            if (got < sizeBytes.Length)
                throw new DataException($"{path}: truncated: the header ends after {4 + got} of {4 + sizeBytes.Length} bytes");
            var dims = new int[expectedDimensions];
            long total = 1;
            for (int d = 0; d < dims.Length; d++)
            {
                uint size = BinaryPrimitives.ReadUInt32BigEndian(sizeBytes.AsSpan(4 * d));
                if (size > int.MaxValue) throw new DataException($"{path}: IDX dimension {d} is {size}, too large");
                dims[d] = (int)size;
                total *= size;
                if (total > Array.MaxLength)
                    throw new DataException($"{path}: IDX header sizes [{string.Join(", ", dims.Take(d + 1))}] describe more than {Array.MaxLength} bytes");
            }

            // Allocate only what the file can hold: a raw file its own length, a gzip file at most DEFLATE's
            // largest ratio (1032:1) of its length. A header promising more is a truncated file (or a bomb).
            long headerBytes = 4 + sizeBytes.Length;
            long fileLength = new FileInfo(path).Length;
            long room = s is FileStream ? fileLength - headerBytes : MaxGzipRatio * fileLength;
            if (total > room)
                throw new DataException($"{path}: truncated: header [{string.Join(", ", dims)}] promises {headerBytes + total} bytes, " +
                                        (s is FileStream ? $"the file has {fileLength}" : $"more than a {fileLength}-byte gzip file can hold"));
            // Read exactly the promised bytes (bounded, so a gzip bomb cannot inflate past them), then
            // make sure nothing follows.
            var data = new byte[total];
            got = ReadUpTo(s, data);
            if (got < total)
                throw new DataException($"{path}: truncated: header [{string.Join(", ", dims)}] promises {headerBytes + total} bytes, found {headerBytes + got}");
            Span<byte> extra = stackalloc byte[1];
            if (ReadUpTo(s, extra) != 0)
                throw new DataException($"{path}: trailing bytes after the {headerBytes + total} bytes that header [{string.Join(", ", dims)}] describes");
            return (dims, data);
        }
        catch (InvalidDataException e)
        {
            throw new DataException($"{path}: corrupt gzip stream ({e.Message.ReplaceLineEndings(" ")})", e);
        }
        catch (IOException e) when (e is not EndOfStreamException)
        {
            throw new DataException($"{path}: cannot read ({e.Message.ReplaceLineEndings(" ")})", e);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new DataException($"{path}: cannot read ({e.Message.ReplaceLineEndings(" ")})", e);
        }
    }

    // The file as a byte stream: gunzipped when it starts with 1f 8b.
    private static Stream Open(string path)
    {
        var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        Span<byte> b = stackalloc byte[2];
        int n = file.Read(b);
        file.Position = 0;
        if (n == 2 && b[0] == 0x1f && b[1] == 0x8b)
            return new BufferedStream(new GZipStream(file, CompressionMode.Decompress), 1 << 16);
        return file;
    }

    // Reads until the buffer is full or the stream ends; returns the byte count.
    private static int ReadUpTo(Stream s, Span<byte> buffer)
    {
        int total = 0;
        while (total < buffer.Length)
        {
            int n = s.Read(buffer[total..]);
            if (n == 0) break;
            total += n;
        }
        return total;
    }
}
