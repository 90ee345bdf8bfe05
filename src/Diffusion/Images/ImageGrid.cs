using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Gif;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.PixelFormats;

namespace IlgpuDdpm.Diffusion.Images;

/// <summary>
/// Turns a batch of images <c>[n, c, h, w]</c> in [−1, 1] (c = 1 grayscale, 3 RGB) into one picture: a
/// near-square grid (<c>columns = ⌈√n⌉</c> unless given, rows as needed) with <c>padding</c> black pixels
/// around and between the cells, as torchvision's <c>make_grid</c> lays it out. A value x becomes the byte
/// <c>round((clamp(x, −1, 1) + 1) · 127.5)</c> (halves round up; NaN becomes 0). Unused cells stay black.
/// </summary>
public static class ImageGrid
{
    /// <summary>Largest grid side written, in pixels.</summary>
    public const int MaxSide = 16384;

    /// <summary>Saves the grid as a PNG (8-bit gray for c = 1, RGB for c = 3).</summary>
    public static void SavePng(string path, float[] data, int n, int c, int h, int w, int? columns = null, int padding = 2)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        CreateFolderOf(path);
        if (c == 1)
        {
            using var gray = RenderGray(data, n, h, w, columns, padding);
            gray.SaveAsPng(path, new PngEncoder { ColorType = PngColorType.Grayscale, BitDepth = PngBitDepth.Bit8 });
        }
        else
        {
            using var rgb = Render(data, n, c, h, w, columns, padding);
            rgb.SaveAsPng(path, new PngEncoder { ColorType = PngColorType.Rgb, BitDepth = PngBitDepth.Bit8 });
        }
    }

    /// <summary>
    /// Saves an animated GIF, one grid per frame (e.g. the reverse process, x_T … x_0), looping forever;
    /// each frame shows for <paramref name="frameDelayMs"/> (GIF keeps hundredths of a second) and the
    /// last for <paramref name="lastFrameDelayMs"/> when given. Gray grids use a gray palette; RGB ones a
    /// 256-colour palette per frame.
    /// </summary>
    public static void SaveGif(string path, IReadOnlyList<float[]> frames, int n, int c, int h, int w,
                               int frameDelayMs = 50, int? lastFrameDelayMs = null, int? columns = null, int padding = 2)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(frames);
        if (frames.Count == 0) throw new ArgumentException("an animation needs at least one frame");
        if (frameDelayMs < 0) throw new ArgumentOutOfRangeException(nameof(frameDelayMs), "frame delay must not be negative");
        CreateFolderOf(path);
        using var animation = Render(frames[0], n, c, h, w, columns, padding);
        for (int i = 1; i < frames.Count; i++)
        {
            using var frame = Render(frames[i], n, c, h, w, columns, padding);
            animation.Frames.AddFrame(frame.Frames.RootFrame);
        }
        for (int i = 0; i < animation.Frames.Count; i++)
        {
            int ms = i == animation.Frames.Count - 1 && lastFrameDelayMs is { } last ? last : frameDelayMs;
            animation.Frames[i].Metadata.GetGifMetadata().FrameDelay = (ms + 5) / 10;
        }
        animation.Metadata.GetGifMetadata().RepeatCount = 0; // loop forever
        animation.SaveAsGif(path, new GifEncoder { ColorTableMode = c == 1 ? GifColorTableMode.Global : GifColorTableMode.Local });
    }

    /// <summary>The grid's size in pixels: <c>columns·(w + padding) + padding</c> by <c>rows·(h + padding) + padding</c>.</summary>
    public static (int Width, int Height, int Columns, int Rows) Layout(int n, int h, int w, int? columns, int padding)
    {
        if (n <= 0 || h <= 0 || w <= 0) throw new ArgumentException($"grid of {n} images of {h}x{w}: expected positive sizes");
        if (padding < 0) throw new ArgumentOutOfRangeException(nameof(padding), $"padding {padding}; expected ≥ 0");
        int cols = columns ?? (int)Math.Ceiling(Math.Sqrt(n));
        if (cols <= 0) throw new ArgumentOutOfRangeException(nameof(columns), $"columns {cols}; expected ≥ 1");
        cols = Math.Min(cols, n);
        int rows = (n + cols - 1) / cols;
        long width = (long)cols * (w + padding) + padding, height = (long)rows * (h + padding) + padding;
        if (width > MaxSide || height > MaxSide)
            throw new ArgumentException($"grid of {n} images would be {width}x{height} pixels; at most {MaxSide} per side");
        return ((int)width, (int)height, cols, rows);
    }

    /// <summary>One value in [−1, 1] as a byte: <c>⌊(clamp(x, −1, 1) + 1)·127.5 + 0.5⌋</c>; NaN → 0.</summary>
    public static byte ToByte(float x)
    {
        if (float.IsNaN(x)) return 0;
        double v = (Math.Clamp((double)x, -1.0, 1.0) + 1.0) * 127.5; // in double: exact for every float x
        return (byte)Math.Min(255.0, Math.Floor(v + 0.5));
    }

    /// <summary>The grid as an RGB image (gray images repeat their plane).</summary>
    public static Image<Rgb24> Render(float[] data, int n, int c, int h, int w, int? columns = null, int padding = 2)
    {
        Validate(data, n, c, h, w);
        var (width, height, cols, _) = Layout(n, h, w, columns, padding);
        var image = new Image<Rgb24>(width, height, new Rgb24(0, 0, 0));
        int plane = h * w;
        image.ProcessPixelRows(rows =>
        {
            for (int i = 0; i < n; i++)
            {
                int x0 = padding + (i % cols) * (w + padding), y0 = padding + (i / cols) * (h + padding);
                int baseIndex = i * c * plane;
                for (int y = 0; y < h; y++)
                {
                    var row = rows.GetRowSpan(y0 + y);
                    for (int x = 0; x < w; x++)
                    {
                        int p = baseIndex + y * w + x;
                        byte r = ToByte(data[p]);
                        row[x0 + x] = c == 1 ? new Rgb24(r, r, r) : new Rgb24(r, ToByte(data[p + plane]), ToByte(data[p + 2 * plane]));
                    }
                }
            }
        });
        return image;
    }

    /// <summary>The grid of single-channel images as an 8-bit gray image.</summary>
    public static Image<L8> RenderGray(float[] data, int n, int h, int w, int? columns = null, int padding = 2)
    {
        Validate(data, n, 1, h, w);
        var (width, height, cols, _) = Layout(n, h, w, columns, padding);
        var image = new Image<L8>(width, height, new L8(0));
        image.ProcessPixelRows(rows =>
        {
            for (int i = 0; i < n; i++)
            {
                int x0 = padding + (i % cols) * (w + padding), y0 = padding + (i / cols) * (h + padding);
                for (int y = 0; y < h; y++)
                {
                    var row = rows.GetRowSpan(y0 + y);
                    int p = (i * h + y) * w;
                    for (int x = 0; x < w; x++) row[x0 + x] = new L8(ToByte(data[p + x]));
                }
            }
        });
        return image;
    }

    private static void Validate(float[] data, int n, int c, int h, int w)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (c is not (1 or 3)) throw new ArgumentException($"{c} channels; expected 1 (grayscale) or 3 (RGB)");
        if (n <= 0 || h <= 0 || w <= 0) throw new ArgumentException($"grid of {n} images of {h}x{w}: expected positive sizes");
        if ((long)n * c * h * w != data.LongLength)
            throw new ArgumentException($"image data holds {data.LongLength} floats; [{n}, {c}, {h}, {w}] needs {(long)n * c * h * w}");
    }

    internal static void CreateFolderOf(string path)
    {
        string? folder = Path.GetDirectoryName(Path.GetFullPath(path));
        if (!string.IsNullOrEmpty(folder)) Directory.CreateDirectory(folder);
    }
}
