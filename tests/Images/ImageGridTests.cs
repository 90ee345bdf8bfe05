using IlgpuDdpm.Diffusion.Images;
using IlgpuDdpm.Tests.Data;
using NUnit.Framework;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Gif;
using SixLabors.ImageSharp.PixelFormats;

namespace IlgpuDdpm.Tests.Images;

[TestFixture]
public sealed class ImageGridTests
{
    private TempFolder tmp = null!;

    [SetUp] public void SetUp() => tmp = new TempFolder();
    [TearDown] public void TearDown() => tmp.Dispose();

    private static byte Expected(float x) =>
        float.IsNaN(x) ? (byte)0 : (byte)Math.Floor((Math.Clamp((double)x, -1, 1) + 1) * 127.5 + 0.5);

    [Test]
    public void ConvertsValuesToBytes()
    {
        Assert.That(ImageGrid.ToByte(-1f), Is.EqualTo(0));
        Assert.That(ImageGrid.ToByte(1f), Is.EqualTo(255));
        Assert.That(ImageGrid.ToByte(0f), Is.EqualTo(128), "127.5 rounds up");
        Assert.That(ImageGrid.ToByte(-3f), Is.EqualTo(0));
        Assert.That(ImageGrid.ToByte(7f), Is.EqualTo(255));
        Assert.That(ImageGrid.ToByte(float.NaN), Is.EqualTo(0));
        Assert.That(ImageGrid.ToByte(float.PositiveInfinity), Is.EqualTo(255));
        Assert.That(ImageGrid.ToByte(51 / 127.5f - 1), Is.EqualTo(51), "inverse of the data scaling");
        for (int b = 0; b < 256; b++)
            Assert.That(ImageGrid.ToByte(b / 127.5f - 1), Is.EqualTo(b), $"byte {b} survives the round trip");
    }

    [Test]
    public void GrayGridHasTheLayoutAndPixelValues()
    {
        // 5 images of 3×4: ⌈√5⌉ = 3 columns, 2 rows; padding 2 → 3·(4+2)+2 = 20 wide, 2·(3+2)+2 = 12 high.
        int n = 5, h = 3, w = 4;
        var data = TestData.Uniform(n * h * w, seed: 3, scale: 1.3f); // some values beyond ±1 (clamped)
        data[0] = float.NaN;
        string path = tmp.File("grid.png");
        ImageGrid.SavePng(path, data, n, 1, h, w);

        using var img = Image.Load<L8>(path);
        Assert.That((img.Width, img.Height), Is.EqualTo((20, 12)));
        for (int i = 0; i < n; i++)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                {
                    int px = 2 + (i % 3) * 6 + x, py = 2 + (i / 3) * 5 + y;
                    Assert.That(img[px, py].PackedValue, Is.EqualTo(Expected(data[(i * h + y) * w + x])), $"image {i} ({x},{y})");
                }
        // Padding and the unused sixth cell are black.
        Assert.That(img[0, 0].PackedValue, Is.Zero);
        Assert.That(img[7, 3].PackedValue, Is.Zero, "between cells");
        Assert.That(img[2 + 2 * 6 + 1, 2 + 5 + 1].PackedValue, Is.Zero, "empty last cell");
        Assert.That(img[19, 11].PackedValue, Is.Zero);
    }

    [Test]
    public void RgbGridKeepsChannelsAndHonoursColumnsAndPadding()
    {
        int n = 3, h = 2, w = 2;
        var data = new float[n * 3 * h * w];
        for (int i = 0; i < n; i++)
            for (int c = 0; c < 3; c++)
                for (int p = 0; p < 4; p++) data[(i * 3 + c) * 4 + p] = -1 + 0.1f * (i * 6 + c * 2) + 0.01f * p;
        string path = tmp.File("rgb.png");
        ImageGrid.SavePng(path, data, n, 3, h, w, columns: 3, padding: 1);
        using var img = Image.Load<Rgb24>(path);
        Assert.That((img.Width, img.Height), Is.EqualTo((3 * 3 + 1, 2 + 2)));
        for (int i = 0; i < n; i++)
            for (int p = 0; p < 4; p++)
            {
                var px = img[1 + i * 3 + p % 2, 1 + p / 2];
                Assert.That(px.R, Is.EqualTo(Expected(data[(i * 3 + 0) * 4 + p])));
                Assert.That(px.G, Is.EqualTo(Expected(data[(i * 3 + 1) * 4 + p])));
                Assert.That(px.B, Is.EqualTo(Expected(data[(i * 3 + 2) * 4 + p])));
            }
        Assert.That(ImageGrid.Layout(16, 28, 28, null, 2), Is.EqualTo((4 * 30 + 2, 4 * 30 + 2, 4, 4)));
        Assert.That(ImageGrid.Layout(3, 8, 8, 10, 0), Is.EqualTo((24, 8, 3, 1)), "no more columns than images");
    }

    [Test]
    public void RefusesMismatchedData()
    {
        string path = tmp.File("x.png");
        Assert.Throws<ArgumentException>(() => ImageGrid.SavePng(path, new float[10], 1, 1, 3, 3));
        Assert.Throws<ArgumentException>(() => ImageGrid.SavePng(path, new float[18], 1, 2, 3, 3));
        Assert.That(File.Exists(path), Is.False);
    }

    [Test]
    public void GifHasOneFramePerGridAndItsDelays()
    {
        int n = 4, h = 5, w = 5;
        var frames = Enumerable.Range(0, 6).Select(f => Enumerable.Repeat(-1f + f * 0.4f, n * h * w).ToArray()).ToList();
        string path = tmp.File("reverse.gif");
        ImageGrid.SaveGif(path, frames, n, 1, h, w, frameDelayMs: 80, lastFrameDelayMs: 1000);

        using var gif = Image.Load<Rgb24>(path);
        Assert.That(gif.Frames.Count, Is.EqualTo(6));
        Assert.That((gif.Width, gif.Height), Is.EqualTo((2 * 7 + 2, 2 * 7 + 2)));
        Assert.That(gif.Frames[0].Metadata.GetGifMetadata().FrameDelay, Is.EqualTo(8));
        Assert.That(gif.Frames[5].Metadata.GetGifMetadata().FrameDelay, Is.EqualTo(100));
        Assert.That(gif.Metadata.GetGifMetadata().RepeatCount, Is.Zero, "loops forever");
        for (int f = 0; f < 6; f++)
        {
            var px = gif.Frames[f][3, 3];
            byte expected = Expected(-1f + f * 0.4f);
            Assert.That((int)px.R, Is.EqualTo(expected).Within(2), $"frame {f}");
            Assert.That(px.G, Is.EqualTo(px.R));
        }
    }

    [Test]
    public void RgbGifReadsBack()
    {
        var frames = new List<float[]> { TestData.Uniform(2 * 3 * 4 * 4, 1), TestData.Uniform(2 * 3 * 4 * 4, 2) };
        string path = tmp.File("rgb.gif");
        ImageGrid.SaveGif(path, frames, 2, 3, 4, 4);
        using var gif = Image.Load<Rgb24>(path);
        Assert.That(gif.Frames.Count, Is.EqualTo(2));
    }
}
