using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats;
using SixLabors.ImageSharp.Formats.Bmp;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace IlgpuDdpm.Diffusion.Data;

/// <summary>
/// Reads every PNG, JPEG and BMP file of a folder (not its subfolders; sorted by file name, ordinal) into
/// square <see cref="ByteImages"/>: each image's dimensions are checked BEFORE it is decoded (absurd
/// sizes are refused), then it is centre-cropped to a square, resized (bicubic) to the model size and
/// turned into grayscale (luminance) or RGB. Files with other extensions and hidden files are skipped;
/// a folder with no image is an error. Every problem is a <see cref="DataException"/> naming the file.
/// </summary>
public static class ImageFolderReader
{
    /// <summary>Largest accepted side of a source image, in pixels.</summary>
    public const int MaxSide = 8192;

    /// <summary>Largest accepted source image area, in pixels (64 Mpx).</summary>
    public const long MaxPixels = 64L * 1024 * 1024;

    /// <summary>Largest accepted output size (the model's image side).</summary>
    public const int MaxOutputSize = 4096;

    /// <summary>The file extensions read (case-insensitive).</summary>
    public static IReadOnlyList<string> Extensions { get; } = [".png", ".jpg", ".jpeg", ".bmp"];

    /// <summary>The image files of <paramref name="folder"/>, sorted by name; empty when it has none.</summary>
    public static IReadOnlyList<string> ListImages(string folder)
    {
        if (!Directory.Exists(folder)) throw new DataException($"{folder}: folder not found");
        try
        {
            return Directory.EnumerateFiles(folder)
                .Where(f => !Path.GetFileName(f).StartsWith('.') &&
                            Extensions.Contains(Path.GetExtension(f).ToLowerInvariant()))
                .OrderBy(f => Path.GetFileName(f), StringComparer.Ordinal)
                .ToList();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new DataException($"{folder}: cannot list the folder ({e.Message})", e);
        }
    }

    /// <summary>
    /// Reads the folder's images at <paramref name="size"/>×<paramref name="size"/> (default: the shorter
    /// side of the first image) with <paramref name="channels"/> channels: 1 = luminance, 3 = RGB;
    /// default: 1 when every image is gray (R = G = B at every pixel), else 3.
    /// </summary>
    public static ByteImages Read(string folder, int? size = null, int? channels = null)
    {
        if (channels is not (null or 1 or 3))
            throw new DataException($"{folder}: {channels} channels requested; expected 1 (grayscale) or 3 (RGB)");
        if (size is { } s0 && (s0 < 1 || s0 > MaxOutputSize))
            throw new DataException($"{folder}: image size {s0} requested; expected 1..{MaxOutputSize}");
        var files = ListImages(folder);
        if (files.Count == 0)
            throw new DataException($"{folder}: no image files (expected {string.Join(", ", Extensions)})");

        int outSize = 0;
        var rgb = new List<byte[]>(files.Count); // [size, size, 3] interleaved, per file
        bool allGray = true;
        foreach (var file in files)
        {
            using var image = LoadChecked(file);
            if (outSize == 0)
            {
                outSize = size ?? Math.Min(image.Width, image.Height);
                if (outSize > MaxOutputSize)
                    throw new DataException($"{file}: shorter side {outSize} exceeds {MaxOutputSize}; pass a smaller image size");
                long total = (long)files.Count * 3 * outSize * outSize;
                if (total > Array.MaxLength)
                    throw new DataException($"{folder}: {files.Count} images of {outSize}x{outSize} do not fit in memory; pass a smaller image size");
            }
            CropAndResize(image, outSize);
            var bytes = new byte[outSize * outSize * 3];
            image.CopyPixelDataTo(bytes);
            if (allGray)
                for (int i = 0; i < bytes.Length; i += 3)
                    if (bytes[i] != bytes[i + 1] || bytes[i] != bytes[i + 2]) { allGray = false; break; }
            rgb.Add(bytes);
        }

        int c = channels ?? (allGray ? 1 : 3);
        int plane = outSize * outSize;
        var pixels = new byte[(long)rgb.Count * c * plane];
        for (int n = 0; n < rgb.Count; n++)
        {
            var src = rgb[n];
            var dst = pixels.AsSpan(n * c * plane, c * plane);
            if (c == 1)
                for (int p = 0; p < plane; p++) dst[p] = Luminance(src[3 * p], src[3 * p + 1], src[3 * p + 2]);
            else
                for (int p = 0; p < plane; p++)
                {
                    dst[p] = src[3 * p];
                    dst[plane + p] = src[3 * p + 1];
                    dst[2 * plane + p] = src[3 * p + 2];
                }
        }
        return new ByteImages(pixels, rgb.Count, c, outSize, outSize);
    }

    /// <summary>
    /// ITU-R BT.601 luma, Y = 0.299 R + 0.587 G + 0.114 B, rounded — in the same 16-bit fixed point as
    /// PIL's <c>convert("L")</c>, so a grayscale image made by PIL from the same RGB gives the same bytes.
    /// </summary>
    public static byte Luminance(byte r, byte g, byte b) => (byte)((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16);

    /// <summary>
    /// Opens one image after checking, from its header alone, that it is a PNG, JPEG or BMP of a sane
    /// size (≤ <see cref="MaxSide"/> per side, ≤ <see cref="MaxPixels"/> in all); decodes it as RGB.
    /// </summary>
    public static Image<Rgb24> LoadChecked(string path)
    {
        try
        {
            var info = Image.Identify(path, out IImageFormat? format);
            if (info is null || format is null)
                throw new DataException($"{path}: not a readable image (expected PNG, JPEG or BMP)");
            if (format is not (PngFormat or JpegFormat or BmpFormat))
                throw new DataException($"{path}: is a {format.Name} image; expected PNG, JPEG or BMP");
            if (info.Width <= 0 || info.Height <= 0)
                throw new DataException($"{path}: image header says {info.Width}x{info.Height}; expected positive dimensions");
            if (info.Width > MaxSide || info.Height > MaxSide || (long)info.Width * info.Height > MaxPixels)
                throw new DataException($"{path}: image is {info.Width}x{info.Height}; refusing more than {MaxSide} pixels on a side or {MaxPixels / (1024 * 1024)} Mpx");
            // No more pixels than the file's size can encode in its format: the decoder allocates them all.
            long fileLength = new FileInfo(path).Length, mostPixels = PixelsPerByte(format) * fileLength + 4096;
            if ((long)info.Width * info.Height > mostPixels)
                throw new DataException($"{path}: header says {info.Width}x{info.Height}, more pixels than a {fileLength}-byte {format.Name} file can hold (truncated, or a decompression bomb)");
            var image = Image.Load<Rgb24>(path);
            if (image.Width != info.Width || image.Height != info.Height)
            {
                image.Dispose();
                throw new DataException($"{path}: decoded size {image.Width}x{image.Height} differs from the header's {info.Width}x{info.Height}");
            }
            return image;
        }
        catch (DataException) { throw; }
        catch (Exception e) when (e is ImageFormatException or NotSupportedException or InvalidDataException
                                   or IOException or UnauthorizedAccessException or ArgumentException
                                   or IndexOutOfRangeException or InvalidOperationException
                                   or SixLabors.ImageSharp.Memory.InvalidMemoryOperationException)
        {
            throw new DataException($"{path}: not a readable image ({OneLine(e.Message)})", e);
        }
        catch (Exception e) when (e is NullReferenceException or ArithmeticException)
        {
            // The decoder's own failures on a corrupt file (found by tests/Data/ReaderFuzzTests.cs): still the file's fault.
            throw new DataException($"{path}: not a readable image (the decoder failed: {e.GetType().Name})", e);
        }
    }

    /// <summary>
    /// The most pixels one byte of a file can encode: PNG at DEFLATE's 1032:1 with 8 one-bit pixels a byte;
    /// baseline JPEG at 2 bits for a flat 8×8 block (DC difference and end-of-block); BMP's RLE at 255 pixels
    /// per 2-byte run (a BMP whose RLE skips or ends early to claim more is refused).
    /// </summary>
    private static long PixelsPerByte(IImageFormat format) => format switch
    {
        PngFormat => 8 * 1032,
        JpegFormat => 256,
        _ => 128,
    };

    /// <summary>Centre-crops <paramref name="image"/> to a square and resizes it (bicubic) to <paramref name="size"/>².</summary>
    public static void CropAndResize(Image image, int size)
    {
        int side = Math.Min(image.Width, image.Height);
        int x0 = (image.Width - side) / 2, y0 = (image.Height - side) / 2;
        image.Mutate(ctx =>
        {
            if (side != image.Width || side != image.Height) ctx.Crop(new Rectangle(x0, y0, side, side));
            if (side != size) ctx.Resize(size, size, KnownResamplers.Bicubic);
        });
    }

    /// <summary>
    /// Crops, resizes and converts the channels of already-decoded byte images (e.g. from an IDX file):
    /// to <paramref name="size"/>² when given (else unchanged) and to <paramref name="channels"/> channels
    /// (1 → 3 repeats the gray plane; 3 → 1 takes the luminance).
    /// </summary>
    public static ByteImages Transform(ByteImages images, int? size, int? channels, string source)
    {
        if (channels is not (null or 1 or 3))
            throw new DataException($"{source}: {channels} channels requested; expected 1 (grayscale) or 3 (RGB)");
        if (size is { } s0 && (s0 < 1 || s0 > MaxOutputSize))
            throw new DataException($"{source}: image size {s0} requested; expected 1..{MaxOutputSize}");
        int c = channels ?? images.Channels;
        bool resize = size is { } s && (s != images.Height || s != images.Width);
        if (!resize && c == images.Channels) return images;
        int h = resize ? size!.Value : images.Height, w = resize ? size!.Value : images.Width;
        long total = (long)images.Count * c * h * w;
        if (total > Array.MaxLength)
            throw new DataException($"{source}: {images.Count} images of {c}x{h}x{w} do not fit in memory; pass a smaller image size");
        var output = new byte[total];
        int inPlane = images.Height * images.Width, outPlane = h * w;
        var rgb = new byte[Math.Max(inPlane, outPlane) * 3];
        for (int n = 0; n < images.Count; n++)
        {
            var src = images.Pixels.AsSpan(n * images.ImageLength, images.ImageLength);
            var dst = output.AsSpan(n * c * outPlane, c * outPlane);
            // Interleave to RGB (gray repeated), resample if asked, then write the requested channels.
            for (int p = 0; p < inPlane; p++)
            {
                if (images.Channels == 1) { rgb[3 * p] = rgb[3 * p + 1] = rgb[3 * p + 2] = src[p]; }
                else { rgb[3 * p] = src[p]; rgb[3 * p + 1] = src[inPlane + p]; rgb[3 * p + 2] = src[2 * inPlane + p]; }
            }
            if (resize)
            {
                using var image = Image.LoadPixelData<Rgb24>(rgb.AsSpan(0, inPlane * 3), images.Width, images.Height);
                CropAndResize(image, h);
                image.CopyPixelDataTo(rgb.AsSpan(0, outPlane * 3));
            }
            for (int p = 0; p < outPlane; p++)
            {
                if (c == 1)
                    dst[p] = images.Channels == 1 ? rgb[3 * p] : Luminance(rgb[3 * p], rgb[3 * p + 1], rgb[3 * p + 2]);
                else { dst[p] = rgb[3 * p]; dst[outPlane + p] = rgb[3 * p + 1]; dst[2 * outPlane + p] = rgb[3 * p + 2]; }
            }
        }
        return new ByteImages(output, images.Count, c, h, w);
    }

    private static string OneLine(string s) => s.ReplaceLineEndings(" ").Trim();
}
