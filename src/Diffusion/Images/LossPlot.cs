using System.Globalization;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace IlgpuDdpm.Diffusion.Images;

/// <summary>
/// A training-loss plot drawn pixel by pixel (no drawing library; text in <see cref="RasterFont"/>): white background,
/// light grid lines (each power of ten on a log y axis, else ~6 round values; round step values on x), dark axes
/// with tick marks and their values, a title, the raw loss as a thin light-blue line and, from 10 points on, a
/// centred moving average (window ≈ 1/25 of the points) as a thicker dark-blue line. Lines are anti-aliased
/// (Xiaolin Wu). On a log axis, points whose loss is not positive are left out; non-finite losses are always left
/// out. A plot smaller than <see cref="MinLabelledWidth"/> × <see cref="MinLabelledHeight"/> has no text.
/// </summary>
public static class LossPlot
{
    private static readonly Rgb24 Background = new(255, 255, 255);
    private static readonly Rgb24 Grid = new(232, 232, 232);
    private static readonly Rgb24 MinorGrid = new(245, 245, 245);
    private static readonly Rgb24 Axis = new(64, 64, 64);
    private static readonly Rgb24 Raw = new(160, 196, 232);
    private static readonly Rgb24 Smooth = new(31, 96, 170);

    /// <summary>Smallest accepted plot side, in pixels.</summary>
    public const int MinSide = 64;

    /// <summary>Largest accepted plot side, in pixels.</summary>
    public const int MaxSide = 8192;

    /// <summary>Narrowest plot that gets its title and tick values.</summary>
    public const int MinLabelledWidth = 240;

    /// <summary>Lowest plot that gets its title and tick values.</summary>
    public const int MinLabelledHeight = 120;

    /// <summary>The title of the loss panel.</summary>
    public const string LossTitle = "training loss (MSE of the predicted noise), log scale";

    /// <summary>Saves the plot of <paramref name="points"/> (step, loss) as a <paramref name="width"/>×<paramref name="height"/> PNG.</summary>
    public static void SavePng(string path, IReadOnlyList<(int Step, float Loss)> points, int width = 800, int height = 400, bool logScale = true)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        using var image = Render(points, width, height, logScale, LossTitle);
        ImageGrid.CreateFolderOf(path);
        image.SaveAsPng(path);
    }

    /// <summary>
    /// Saves the loss plot with two panels below it when <paramref name="scores"/> has points: the Fréchet
    /// classifier distance (log axis) and KID (linear axis: the unbiased estimate can be negative) against
    /// the step, on the same step range as the points themselves. Without scores it is <see cref="SavePng(string, IReadOnlyList{ValueTuple{int, float}}, int, int, bool)"/>.
    /// </summary>
    public static void SavePng(string path, IReadOnlyList<(int Step, float Loss)> points, IReadOnlyList<(int Step, float Fcd, float Kid)> scores, int width = 800, int height = 400)
    {
        ArgumentNullException.ThrowIfNull(scores);
        if (scores.Count == 0)
        {
            SavePng(path, points, width, height);
            return;
        }
        ArgumentException.ThrowIfNullOrEmpty(path);
        int panel = Math.Max(MinSide, height / 2);
        using var loss = Render(points, width, height, title: LossTitle);
        using var fcd = Render(scores.Select(s => (s.Step, s.Fcd)).ToList(), width, panel, title: "FCD of samples against the test split, log scale");
        using var kid = Render(scores.Select(s => (s.Step, s.Kid)).ToList(), width, panel, logScale: false, title: "KID of samples against the test split");
        using var image = new Image<Rgb24>(width, height + 2 * panel);
        image.ProcessPixelRows(loss, fcd, (target, a, b) =>
        {
            for (int y = 0; y < a.Height; y++) a.GetRowSpan(y).CopyTo(target.GetRowSpan(y));
            for (int y = 0; y < b.Height; y++) b.GetRowSpan(y).CopyTo(target.GetRowSpan(height + y));
        });
        image.ProcessPixelRows(kid, (target, c) =>
        {
            for (int y = 0; y < c.Height; y++) c.GetRowSpan(y).CopyTo(target.GetRowSpan(height + panel + y));
        });
        ImageGrid.CreateFolderOf(path);
        image.SaveAsPng(path);
    }

    /// <summary>The plot as an RGB image of <paramref name="width"/>×<paramref name="height"/>, with <paramref name="title"/> over it (none when null).</summary>
    public static Image<Rgb24> Render(IReadOnlyList<(int Step, float Loss)> points, int width = 800, int height = 400, bool logScale = true, string? title = null)
    {
        ArgumentNullException.ThrowIfNull(points);
        if (width < MinSide || height < MinSide || width > MaxSide || height > MaxSide)
            throw new ArgumentException($"loss plot of {width}x{height}; expected {MinSide}..{MaxSide} pixels per side");

        // Usable points, in plot space (log10 of the loss on a log axis).
        var xs = new List<double>(points.Count);
        var ys = new List<double>(points.Count);
        foreach (var (step, loss) in points)
        {
            if (!float.IsFinite(loss) || (logScale && loss <= 0)) continue;
            xs.Add(step);
            ys.Add(logScale ? Math.Log10(loss) : loss);
        }

        var canvas = new Canvas(width, height);
        bool labelled = width >= MinLabelledWidth && height >= MinLabelledHeight;
        int text = RasterFont.Height;
        int left = labelled ? 8 + RasterFont.Width("0.0000") + 8 : Math.Max(12, width / 20), right = width - Math.Max(8, width / 40);
        int top = labelled ? text + 8 : Math.Max(8, height / 25), bottom = height - (labelled ? text + 10 : Math.Max(12, height / 14));
        if (labelled && title is not null) canvas.Text(left, 3, title);

        double x0 = 0, x1 = 1, y0 = 0, y1 = 1;
        if (xs.Count > 0)
        {
            x0 = xs.Min(); x1 = xs.Max();
            if (x1 <= x0) { x0 -= 1; x1 += 1; }
            y0 = ys.Min(); y1 = ys.Max();
            double pad = (y1 - y0) * 0.05;
            if (pad <= 0) pad = logScale ? 0.1 : Math.Max(Math.Abs(y0) * 0.1, 0.5);
            y0 -= pad; y1 += pad;
        }
        double Px(double x) => left + (x - x0) / (x1 - x0) * (right - left);
        double Py(double y) => bottom - (y - y0) / (y1 - y0) * (bottom - top);

        // Grid and ticks.
        void YLabel(int py, double value)
        {
            if (!labelled) return;
            string label = Label(value);
            canvas.Text(left - 7 - RasterFont.Width(label), py - text / 2, label);
        }
        foreach (double gx in NiceTicks(x0, x1, 8))
        {
            int px = (int)Math.Round(Px(gx));
            canvas.VLine(px, top, bottom, Grid);
            canvas.VLine(px, bottom, bottom + 4, Axis);
            if (labelled) canvas.Text(Math.Min(px - RasterFont.Width(Label(gx)) / 2, width - 2 - RasterFont.Width(Label(gx))), bottom + 6, Label(gx));
        }
        if (labelled) canvas.Text(4, bottom + 6, "step"); // under the y values, left of the first step value
        if (logScale)
        {
            // Every power of ten gets its value; on a range of less than two of them, the lines between get theirs too.
            bool labelMinor = Math.Floor(y1) - Math.Ceiling(y0) < 1;
            for (int decade = (int)Math.Floor(y0); decade <= (int)Math.Ceiling(y1); decade++)
            {
                for (int m = 2; m <= 9; m++)
                {
                    double v = decade + Math.Log10(m);
                    if (!(v > y0 && v < y1)) continue;
                    int py = (int)Math.Round(Py(v));
                    canvas.HLine(left, right, py, MinorGrid);
                    if (labelMinor) YLabel(py, m * Math.Pow(10, decade));
                }
                if (decade >= y0 && decade <= y1)
                {
                    int py = (int)Math.Round(Py(decade));
                    canvas.HLine(left, right, py, Grid);
                    canvas.HLine(left - 5, left, py, Axis);
                    YLabel(py, Math.Pow(10, decade));
                }
            }
        }
        else
        {
            foreach (double gy in NiceTicks(y0, y1, 6))
            {
                int py = (int)Math.Round(Py(gy));
                canvas.HLine(left, right, py, Grid);
                canvas.HLine(left - 5, left, py, Axis);
                YLabel(py, gy);
            }
        }
        canvas.VLine(left, top, bottom, Axis);
        canvas.HLine(left, right, bottom, Axis);

        // Curves.
        if (xs.Count == 1)
            canvas.Dot(Px(xs[0]), Py(ys[0]), Smooth);
        for (int i = 1; i < xs.Count; i++)
            canvas.Line(Px(xs[i - 1]), Py(ys[i - 1]), Px(xs[i]), Py(ys[i]), Raw, 1);
        if (xs.Count >= 10)
        {
            var smooth = MovingAverage(ys, Math.Max(1, xs.Count / 25));
            for (int i = 1; i < xs.Count; i++)
                canvas.Line(Px(xs[i - 1]), Py(smooth[i - 1]), Px(xs[i]), Py(smooth[i]), Smooth, 2);
        }
        return canvas.ToImage();
    }

    /// <summary>A tick value as printed: at most 4 significant digits, no exponent between 0.0001 and 10^6, "0" for a rounding residue.</summary>
    internal static string Label(double v)
    {
        if (Math.Abs(v) < 1e-12) return "0";
        double a = Math.Abs(v);
        return a >= 1e-4 && a < 1e6 ? v.ToString("0.####", CultureInfo.InvariantCulture) : v.ToString("0.#e0", CultureInfo.InvariantCulture);
    }

    /// <summary>Centred moving average over ±<paramref name="half"/> neighbours (symmetrically fewer near the ends).</summary>
    internal static double[] MovingAverage(IReadOnlyList<double> y, int half)
    {
        var prefix = new double[y.Count + 1];
        for (int i = 0; i < y.Count; i++) prefix[i + 1] = prefix[i] + y[i];
        var result = new double[y.Count];
        for (int i = 0; i < y.Count; i++)
        {
            int k = Math.Min(half, Math.Min(i, y.Count - 1 - i)); // symmetric, so the ends are not biased
            int a = i - k, b = i + k + 1;
            result[i] = (prefix[b] - prefix[a]) / (b - a);
        }
        return result;
    }

    /// <summary>Round values (1, 2 or 5 times a power of ten apart) inside [lo, hi], about <paramref name="target"/> of them.</summary>
    internal static IEnumerable<double> NiceTicks(double lo, double hi, int target)
    {
        double raw = (hi - lo) / Math.Max(1, target);
        if (!(raw > 0) || !double.IsFinite(raw)) yield break;
        double mag = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        double m = raw / mag;
        double step = mag * (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10);
        for (double v = Math.Ceiling(lo / step) * step; v <= hi + step * 1e-9; v += step) yield return v;
    }

    // A float RGB canvas with alpha-blended plotting, turned into an image at the end.
    private sealed class Canvas
    {
        private readonly int width, height;
        private readonly float[] r, g, b;

        public Canvas(int width, int height)
        {
            this.width = width;
            this.height = height;
            r = new float[width * height]; g = new float[width * height]; b = new float[width * height];
            Array.Fill(r, Background.R); Array.Fill(g, Background.G); Array.Fill(b, Background.B);
        }

        public void Blend(int x, int y, Rgb24 c, double alpha)
        {
            if ((uint)x >= (uint)width || (uint)y >= (uint)height || alpha <= 0) return;
            float a = (float)Math.Min(1, alpha);
            int i = y * width + x;
            r[i] += (c.R - r[i]) * a; g[i] += (c.G - g[i]) * a; b[i] += (c.B - b[i]) * a;
        }

        public void Text(int x, int y, string text) => RasterFont.Draw(text, x, y, (px, py, a) => Blend(px, py, Axis, a));

        public void HLine(int xa, int xb, int y, Rgb24 c) { for (int x = xa; x <= xb; x++) Blend(x, y, c, 1); }

        public void VLine(int x, int ya, int yb, Rgb24 c) { for (int y = ya; y <= yb; y++) Blend(x, y, c, 1); }

        public void Dot(double x, double y, Rgb24 c)
        {
            for (int dy = -2; dy <= 2; dy++)
                for (int dx = -2; dx <= 2; dx++)
                    if (dx * dx + dy * dy <= 5) Blend((int)Math.Round(x) + dx, (int)Math.Round(y) + dy, c, 1);
        }

        // Xiaolin Wu's anti-aliased line; thickness 2 draws the line and its neighbour across the major axis.
        public void Line(double xa, double ya, double xb, double yb, Rgb24 c, int thickness)
        {
            bool steep = Math.Abs(yb - ya) > Math.Abs(xb - xa);
            if (steep) { (xa, ya) = (ya, xa); (xb, yb) = (yb, xb); }
            if (xa > xb) { (xa, xb) = (xb, xa); (ya, yb) = (yb, ya); }
            double dx = xb - xa, gradient = dx < 1e-9 ? 0 : (yb - ya) / dx;
            int start = (int)Math.Round(xa), end = (int)Math.Round(xb);
            for (int x = start; x <= end; x++)
            {
                double y = ya + gradient * (x - xa);
                int yi = (int)Math.Floor(y);
                double f = y - yi;
                for (int t = 0; t < thickness; t++)
                {
                    Plot(steep, x, yi + t, c, t == 0 ? 1 - f : 1);
                    Plot(steep, x, yi + t + 1, c, t == thickness - 1 ? f : 1);
                }
            }
            if (end == start) Plot(steep, start, (int)Math.Round(ya), c, 1);
        }

        private void Plot(bool steep, int x, int y, Rgb24 c, double a)
        {
            if (steep) Blend(y, x, c, a); else Blend(x, y, c, a);
        }

        public Image<Rgb24> ToImage()
        {
            var image = new Image<Rgb24>(width, height);
            image.ProcessPixelRows(rows =>
            {
                for (int y = 0; y < height; y++)
                {
                    var row = rows.GetRowSpan(y);
                    for (int x = 0; x < width; x++)
                    {
                        int i = y * width + x;
                        row[x] = new Rgb24(ToByte(r[i]), ToByte(g[i]), ToByte(b[i]));
                    }
                }
            });
            return image;
        }

        private static byte ToByte(float v) => (byte)Math.Clamp((int)MathF.Round(v), 0, 255);
    }
}
