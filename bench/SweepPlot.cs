using System.Globalization;
using IlgpuDdpm.Diffusion.Images;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace IlgpuDdpm.Bench;

/// <summary>
/// The sweep's PNG, drawn pixel by pixel with ImageSharp (no drawing library, no font on the machine: text
/// from <see cref="RasterFont"/>): one line with markers per method, throughput against size on a log2 x axis
/// whose ticks are the sizes measured, the measured peak as a dashed black line, both axes labelled, the
/// device and date in the title, a legend below. Lines are anti-aliased by their distance to each pixel.
/// </summary>
public static class SweepPlot
{
    private static readonly Rgb24 Background = new(255, 255, 255), Grid = new(232, 232, 232), Ink = new(40, 40, 40), Peak = new(0, 0, 0);
    private static readonly Rgb24[] Palette =
        [new(31, 119, 180), new(255, 127, 14), new(44, 160, 44), new(214, 39, 40), new(148, 103, 189), new(140, 86, 75)];

    /// <summary>Writes the plot of <paramref name="result"/> as a <paramref name="width"/>×<paramref name="height"/> PNG.</summary>
    public static void SavePng(SweepResult result, string path, int width = 800, int height = 540)
    {
        using var image = Render(result, width, height);
        image.SaveAsPng(path);
    }

    /// <summary>The plot as an image.</summary>
    public static Image<Rgb24> Render(SweepResult result, int width = 800, int height = 540)
    {
        var image = new Image<Rgb24>(width, height, Background);
        var canvas = new Canvas(image);
        var methods = result.Points.Select(p => p.Method).Distinct().ToList();
        string peakLabel = string.Create(CultureInfo.InvariantCulture,
            $"measured peak {result.Peak:F2} {result.Unit} ({(result.Kind == WorkKind.Compute ? "multiply-add" : "copy")})");
        var legend = methods.Select((m, i) => (Text: m, Color: Palette[i % Palette.Length], Dashed: false)).Append((Text: peakLabel, Color: Peak, Dashed: true)).ToList();
        var legendRows = LegendRows(legend.Select(e => e.Text).ToList(), width - 40);
        int line = RasterFont.Height + 4;

        // The plot area; the margins hold the title, tick labels, axis labels and the legend.
        int left = 78, right = width - 24, top = 2 * line, bottom = height - 2 * line - 8 - legendRows.Count * line;

        var h = result.Header;
        string title = string.Create(CultureInfo.InvariantCulture, $"{result.Family}: {h.Device} ({h.ComputeUnits} {h.ComputeUnitName}), {h.Utc:yyyy-MM-dd}");
        canvas.Text((width - RasterFont.Width(title)) / 2, 6, title, Ink);

        var sizes = result.Points.Select(p => p.X).Where(x => x > 0).Distinct().Order().ToArray();
        double xLo = sizes.Length > 0 ? Math.Log2(sizes[0]) : 0, xHi = sizes.Length > 0 ? Math.Log2(sizes[^1]) : 1;
        double pad = Math.Max(0.25, (xHi - xLo) * 0.05);
        xLo -= pad; xHi += pad;
        double yTop = Math.Max(result.Peak, result.Points.Count > 0 ? result.Points.Max(p => p.Rate) : 0);
        if (!(yTop > 0) || !double.IsFinite(yTop)) yTop = 1;
        double yStep = NiceStep(yTop * 1.1 / 6);
        double yHi = Math.Ceiling(yTop * 1.1 / yStep) * yStep;
        double X(double size) => left + (Math.Log2(size) - xLo) / (xHi - xLo) * (right - left);
        double Y(double rate) => bottom - rate / yHi * (bottom - top);

        // Grid, ticks and tick labels.
        for (double v = 0; v <= yHi + yStep / 2; v += yStep)
        {
            int y = (int)Math.Round(Y(v));
            canvas.Rect(left, y, right - left, 1, Grid);
            canvas.Rect(left - 5, y, 5, 1, Ink);
            string label = v.ToString(yStep < 1 ? "0.##" : "0", CultureInfo.InvariantCulture);
            canvas.Text(left - 8 - RasterFont.Width(label), y - RasterFont.Ascent / 2 - 2, label, Ink);
        }
        foreach (var size in sizes)
        {
            int x = (int)Math.Round(X(size));
            canvas.Rect(x, top, 1, bottom - top, Grid);
            canvas.Rect(x, bottom, 1, 5, Ink);
            string label = SweepFamily.Count(size);
            canvas.Text(x - RasterFont.Width(label) / 2, bottom + 7, label, Ink);
        }
        canvas.Rect(left, top, 1, bottom - top + 1, Ink);
        canvas.Rect(left, bottom, right - left + 1, 1, Ink);

        // Axis labels: x below the tick labels, y turned a quarter left of the tick labels.
        string xLabel = result.XLabel + ", log scale";
        canvas.Text(left + (right - left - RasterFont.Width(xLabel)) / 2, bottom + 7 + line, xLabel, Ink);
        canvas.TextUp(8, top + (bottom - top + RasterFont.Width(result.Unit)) / 2, result.Unit, Ink);

        // The peak, then one line per method.
        canvas.DashedHorizontal(left, right, Y(result.Peak), Peak);
        for (int m = 0; m < methods.Count; m++)
        {
            var points = result.Points.Where(p => p.Method == methods[m] && p.X > 0).OrderBy(p => p.X).Select(p => (X(p.X), Y(p.Rate))).ToList();
            for (int i = 1; i < points.Count; i++) canvas.Line(points[i - 1], points[i], 1.1, legend[m].Color);
            foreach (var p in points) canvas.Disc(p, 3.5, legend[m].Color);
        }

        // Legend rows under the x label: a short line sample, then the text.
        int legendTop = bottom + 10 + 2 * line, entry = 0;
        foreach (var row in legendRows)
        {
            int x = 20 + (width - 40 - row.Sum(t => LegendWidth(t))) / 2;
            foreach (var text in row)
            {
                var (_, color, dashed) = legend[entry++];
                double y = legendTop + RasterFont.Ascent / 2.0 + 2;
                if (dashed) canvas.DashedHorizontal(x, x + 24, y, color);
                else
                {
                    canvas.Line((x, y), (x + 24, y), 1.1, color);
                    canvas.Disc((x + 12, y), 3.5, color);
                }
                canvas.Text(x + 30, legendTop, text, Ink);
                x += LegendWidth(text);
            }
            legendTop += line;
        }
        return image;
    }

    private static int LegendWidth(string text) => 30 + RasterFont.Width(text) + 24;

    private static List<List<string>> LegendRows(List<string> texts, int width)
    {
        var rows = new List<List<string>> { new() };
        int used = 0;
        foreach (var text in texts)
        {
            if (rows[^1].Count > 0 && used + LegendWidth(text) > width) { rows.Add([]); used = 0; }
            rows[^1].Add(text);
            used += LegendWidth(text);
        }
        return rows;
    }

    /// <summary>1, 2 or 5 times a power of ten, the first at least <paramref name="rough"/>.</summary>
    private static double NiceStep(double rough)
    {
        double power = Math.Pow(10, Math.Floor(Math.Log10(rough)));
        return new[] { 1.0, 2.0, 5.0, 10.0 }.Select(f => f * power).First(s => s >= rough * 0.999);
    }

    /// <summary>Blending onto the image, clipped to it.</summary>
    private sealed class Canvas(Image<Rgb24> image)
    {
        public void Blend(int x, int y, Rgb24 color, double alpha)
        {
            if (x < 0 || y < 0 || x >= image.Width || y >= image.Height || alpha <= 0) return;
            alpha = Math.Min(alpha, 1);
            var p = image[x, y];
            image[x, y] = new Rgb24(Mix(p.R, color.R, alpha), Mix(p.G, color.G, alpha), Mix(p.B, color.B, alpha));
        }

        public void Rect(int x, int y, int w, int h, Rgb24 color)
        {
            for (int j = y; j < y + h; j++)
                for (int i = x; i < x + w; i++) Blend(i, j, color, 1);
        }

        /// <summary>A segment of half-width <paramref name="half"/>: each pixel gets the coverage of its distance to the segment.</summary>
        public void Line((double X, double Y) a, (double X, double Y) b, double half, Rgb24 color)
        {
            int x0 = (int)Math.Floor(Math.Min(a.X, b.X) - half - 1), x1 = (int)Math.Ceiling(Math.Max(a.X, b.X) + half + 1);
            int y0 = (int)Math.Floor(Math.Min(a.Y, b.Y) - half - 1), y1 = (int)Math.Ceiling(Math.Max(a.Y, b.Y) + half + 1);
            double dx = b.X - a.X, dy = b.Y - a.Y, length2 = dx * dx + dy * dy;
            for (int y = y0; y <= y1; y++)
                for (int x = x0; x <= x1; x++)
                {
                    double t = length2 == 0 ? 0 : Math.Clamp(((x - a.X) * dx + (y - a.Y) * dy) / length2, 0, 1);
                    double ex = a.X + t * dx - x, ey = a.Y + t * dy - y;
                    Blend(x, y, color, half + 0.5 - Math.Sqrt(ex * ex + ey * ey));
                }
        }

        public void Disc((double X, double Y) c, double radius, Rgb24 color) => Line(c, c, radius, color);

        public void DashedHorizontal(double x0, double x1, double y, Rgb24 color)
        {
            for (double x = x0; x < x1; x += 12) Line((x, y), (Math.Min(x + 7, x1), y), 0.9, color);
        }

        /// <summary><paramref name="text"/> with its top-left corner at (x, y).</summary>
        public void Text(int x, int y, string text, Rgb24 color) => RasterFont.Draw(text, x, y, (px, py, a) => Blend(px, py, color, a));

        /// <summary><paramref name="text"/> turned a quarter left (read bottom to top), starting at (x, y) going up.</summary>
        public void TextUp(int x, int y, string text, Rgb24 color)
        {
            foreach (char c in text)
            {
                for (int row = 0; row < RasterFont.Height; row++)
                    for (int col = 0; col < RasterFont.Width(c); col++)
                        Blend(x + row, y - col, color, RasterFont.At(c, col, row) / 255.0);
                y -= RasterFont.Width(c);
            }
        }

        private static byte Mix(byte under, byte over, double alpha) => (byte)Math.Round(under + (over - under) * alpha);
    }
}
