using IlgpuDdpm.Diffusion.Images;
using IlgpuDdpm.Tests.Data;
using NUnit.Framework;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace IlgpuDdpm.Tests.Images;

[TestFixture]
public sealed class LossPlotTests
{
    private TempFolder tmp = null!;

    [SetUp] public void SetUp() => tmp = new TempFolder();
    [TearDown] public void TearDown() => tmp.Dispose();

    private static List<(int, float)> FallingLoss(int count)
    {
        var rng = new Random(5);
        return Enumerable.Range(0, count)
            .Select(i => (i * 10, (float)(0.03 + 0.9 * Math.Exp(-i / 40.0)) * (float)(0.8 + 0.4 * rng.NextDouble())))
            .ToList();
    }

    private static int Count(Image<Rgb24> img, Func<Rgb24, bool> pred)
    {
        int n = 0;
        for (int y = 0; y < img.Height; y++)
            for (int x = 0; x < img.Width; x++)
                if (pred(img[x, y])) n++;
        return n;
    }

    private static bool IsDarkBlue(Rgb24 p) => p.B > 140 && p.R < 80 && p.B - p.R > 100;
    private static bool IsLightBlue(Rgb24 p) => p.B > 200 && p.R is > 130 and < 200;

    [Test]
    public void WritesAPngOfTheRequestedSize()
    {
        string path = tmp.File("plots/loss.png");
        LossPlot.SavePng(path, FallingLoss(300), 320, 200);
        using var img = Image.Load<Rgb24>(path);
        Assert.That((img.Width, img.Height), Is.EqualTo((320, 200)));
        Assert.That(Count(img, IsDarkBlue), Is.GreaterThan(200), "the smoothed curve is drawn");
        Assert.That(Count(img, IsLightBlue), Is.GreaterThan(200), "the raw curve is drawn");
        Assert.That(img[319, 0], Is.EqualTo(new Rgb24(255, 255, 255)), "white background");
    }

    [Test]
    public void AFallingCurveFallsOnThePicture()
    {
        using var img = LossPlot.Render(FallingLoss(400), 400, 240);
        // Mean row of the smoothed-curve pixels in the left quarter lies above (smaller y) the right quarter's.
        double Row(int x0, int x1)
        {
            double sum = 0; int n = 0;
            for (int x = x0; x < x1; x++)
                for (int y = 0; y < img.Height; y++)
                    if (IsDarkBlue(img[x, y])) { sum += y; n++; }
            Assert.That(n, Is.GreaterThan(0), $"curve pixels in columns {x0}..{x1}");
            return sum / n;
        }
        Assert.That(Row(30, 100), Is.LessThan(Row(300, 380) - 50));
    }

    [Test]
    public void ALargePlotHasItsTitleAndTickValuesAndASmallOneNoText()
    {
        static bool IsInk(Rgb24 p) => p.R < 200 && p.R == p.G && p.G == p.B; // the axis grey, anti-aliased; the grid is lighter
        static int InkIn(Image<Rgb24> img, int x0, int x1, int y0, int y1)
        {
            int n = 0;
            for (int y = y0; y < y1; y++)
                for (int x = x0; x < x1; x++)
                    if (IsInk(img[x, y])) n++;
            return n;
        }
        using var plot = LossPlot.Render(FallingLoss(300), 640, 300, title: "training loss");
        int text = RasterFont.Height;
        Assert.That(InkIn(plot, 0, 640, 0, text + 4), Is.GreaterThan(20), "the title above the plot");
        Assert.That(InkIn(plot, 0, 8 + RasterFont.Width("0.0000"), text + 8, 300 - text - 10), Is.GreaterThan(20), "values on the y axis");
        Assert.That(InkIn(plot, 0, 640, 300 - text - 4, 300), Is.GreaterThan(20), "step values under the x axis");
        using var small = LossPlot.Render(FallingLoss(300), 200, 100, title: "training loss");
        Assert.That(InkIn(small, 0, 200, 0, 4), Is.Zero, "no title on a small plot");
        Assert.That(LossPlot.Label(0.05), Is.EqualTo("0.05"));
        Assert.That(LossPlot.Label(1500), Is.EqualTo("1500"));
        Assert.That(LossPlot.Label(1e-6), Is.EqualTo("1e-6"));
        Assert.That(LossPlot.Label(3e-17), Is.EqualTo("0"));
    }

    [Test]
    public void HandlesEdgeCases()
    {
        using (var empty = LossPlot.Render([], 100, 80))
            Assert.That((empty.Width, empty.Height), Is.EqualTo((100, 80)));
        using (var one = LossPlot.Render([(5, 0.5f)], 100, 80))
            Assert.That(Count(one, IsDarkBlue), Is.GreaterThan(0), "a single point shows as a dot");
        using (var flat = LossPlot.Render(Enumerable.Range(0, 20).Select(i => (i, 1f)).ToList(), 100, 80))
            Assert.That(Count(flat, IsDarkBlue), Is.GreaterThan(0));
        // Zero, negative and non-finite losses are skipped on a log axis, kept (finite ones) on a linear one.
        var odd = new List<(int, float)> { (0, 1f), (1, 0f), (2, -1f), (3, float.NaN), (4, float.PositiveInfinity), (5, 0.5f) };
        using (var log = LossPlot.Render(odd, 100, 80)) Assert.That(log.Width, Is.EqualTo(100));
        using (var lin = LossPlot.Render(odd, 100, 80, logScale: false)) Assert.That(lin.Width, Is.EqualTo(100));
        Assert.Throws<ArgumentException>(() => LossPlot.Render([], 10, 10));
    }
}
