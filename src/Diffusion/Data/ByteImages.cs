namespace IlgpuDdpm.Diffusion.Data;

/// <summary>
/// Decoded 8-bit images, <c>[Count, Channels, Height, Width]</c> row-major (NCHW, as everywhere in this
/// project), values 0..255. What the readers produce before <see cref="ImageDataset"/> scales to [−1, 1].
/// </summary>
public sealed class ByteImages
{
    /// <summary>Wraps <paramref name="pixels"/>; its length must be count·channels·height·width.</summary>
    public ByteImages(byte[] pixels, int count, int channels, int height, int width)
    {
        ArgumentNullException.ThrowIfNull(pixels);
        if (count < 0 || channels <= 0 || height <= 0 || width <= 0)
            throw new ArgumentException($"image dimensions must be positive, got count {count}, {channels}x{height}x{width}");
        if ((long)count * channels * height * width != pixels.LongLength)
            throw new ArgumentException($"pixel buffer holds {pixels.LongLength} bytes, expected {count}·{channels}·{height}·{width} = {(long)count * channels * height * width}");
        Pixels = pixels;
        Count = count;
        Channels = channels;
        Height = height;
        Width = width;
    }

    /// <summary>The bytes, <c>[Count, Channels, Height, Width]</c>.</summary>
    public byte[] Pixels { get; }

    /// <summary>Number of images.</summary>
    public int Count { get; }

    /// <summary>1 (grayscale) or 3 (RGB).</summary>
    public int Channels { get; }

    /// <summary>Rows per image.</summary>
    public int Height { get; }

    /// <summary>Columns per image.</summary>
    public int Width { get; }

    /// <summary>Bytes per image: Channels·Height·Width.</summary>
    public int ImageLength => Channels * Height * Width;
}
