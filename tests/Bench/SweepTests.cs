using System.Globalization;
using System.Text.Json;
using IlgpuDdpm.Bench;
using IlgpuDdpm.Tests.Cli;
using NUnit.Framework;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace IlgpuDdpm.Tests.Bench;

/// <summary>
/// Issue 9 item 5, <c>bench --sweep</c>: the four files per family (CSV, JSON, markdown, PNG) exist and parse
/// back to what was measured, and the runner times a real family at one tiny size against the peaks it
/// measured. No timing is asserted (figures go into bench/RESULTS.md).
/// </summary>
[TestFixture]
[NonParallelizable]
public sealed class SweepTests
{
    private string folder = null!;

    [SetUp]
    public void MakeFolder() => folder = CliHarness.NewTempFolder("sweep");

    [TearDown]
    public void DeleteFolder()
    {
        try { Directory.Delete(folder, recursive: true); }
        catch (IOException) { }
    }

    [Test]
    public void Write_GivesCsvJsonMarkdownAndPng_ThatParseBack()
    {
        var header = new SweepHeader("Test device", "Cpu", 2, "cores", 10, 4, new DateTime(2026, 12, 1, 8, 0, 0, DateTimeKind.Utc), true, "test host");
        var result = new SweepResult(header, "norm", "floats", WorkKind.Memory,
        [
            new("Forward", "[8,64,4x4] G8", 8192, 0.001, 1, 0.5, 0.125),
            new("Forward", "[8,64,8x8] G8", 32768, 0.002, 1, 1.0, 0.25),
            new("Backward", "[8,64,4x4] G8", 8192, 0.004, 1, 0.25, 0.0625),
            new("Backward", "[8,64,8x8] G8", 32768, 0.003, 1, 1.5, 0.375),
        ]);

        var paths = SweepReport.Write(result, folder);

        Assert.That(paths.Select(Path.GetFileName), Is.EqualTo(new[] { "norm.csv", "norm.json", "norm.md", "norm.png" }));
        var rows = ParseCsv(File.ReadAllText(paths[0]));
        Assert.That(rows[0], Is.EqualTo(SweepReport.CsvColumns));
        Assert.That(rows, Has.Count.EqualTo(5));
        Assert.That(rows[2][2], Is.EqualTo("[8,64,8x8] G8"), "a case with commas survives the quoting");
        Assert.That(double.Parse(rows[4][6], CultureInfo.InvariantCulture), Is.EqualTo(1.5));
        Assert.That(rows[1][7], Is.EqualTo("GB/s"));

        using var json = JsonDocument.Parse(File.ReadAllText(paths[1]));
        var root = json.RootElement;
        Assert.That(root.GetProperty("device").GetProperty("compute_units").GetInt32(), Is.EqualTo(2));
        Assert.That(root.GetProperty("peaks").GetProperty("copy_gbs").GetDouble(), Is.EqualTo(4));
        Assert.That(root.GetProperty("peak").GetDouble(), Is.EqualTo(4), "a memory-bound family is set against the copy peak");
        Assert.That(root.GetProperty("points").GetArrayLength(), Is.EqualTo(4));
        Assert.That(root.GetProperty("points")[3].GetProperty("fraction_of_peak").GetDouble(), Is.EqualTo(0.375));

        var table = File.ReadAllLines(paths[2]).Where(l => l.StartsWith('|')).ToList();
        Assert.That(table, Has.Count.EqualTo(2 + 4), "header, rule and one row per point");
        Assert.That(File.ReadAllText(paths[2]), Does.Contain("Test device (Cpu, 2 cores)").And.Contain("37.5 %"));

        using var png = Image.Load<Rgb24>(paths[3]);
        Assert.That((png.Width, png.Height), Is.EqualTo((800, 540)));
        int firstMethod = 0, peakLine = 0;
        png.ProcessPixelRows(rows =>
        {
            for (int y = 0; y < rows.Height; y++)
                foreach (var p in rows.GetRowSpan(y))
                {
                    if (p == new Rgb24(31, 119, 180)) firstMethod++;
                    if (p == new Rgb24(0, 0, 0)) peakLine++;
                }
        });
        Assert.That(firstMethod, Is.GreaterThan(20), "the first method's line and markers are drawn");
        Assert.That(peakLine, Is.GreaterThan(20), "the peak's dashed line is drawn");
    }

    [Test]
    public void Runner_TimesARealFamilyAgainstThePeaksItMeasured()
    {
        try
        {
            var runner = new SweepRunner(minSeconds: 0.001, minSamples: 1, TextWriter.Null);
            var header = runner.MeasurePeaks(Settings.BindDevice());
            Assert.That(header.PeakGflops, Is.GreaterThan(0).And.Not.EqualTo(double.PositiveInfinity));
            Assert.That(header.PeakGBs, Is.GreaterThan(0).And.Not.EqualTo(double.PositiveInfinity));
            var family = new SweepFamily("elementwise", typeof(ElementwiseBenchmarks), "floats", WorkKind.Memory,
                [new SweepSize(1024, new SizeCase("1K", 1024, method => Work.Memory(8.0 * 1024, 1)))]);

            var result = runner.Run(family, header);

            Assert.That(result.Points.Select(p => p.Method), Is.EqualTo(new[] { "Silu", "SiluBackward" }));
            foreach (var p in result.Points)
            {
                Assert.That(p.Seconds, Is.GreaterThan(0));
                Assert.That(p.Rate, Is.EqualTo(8.0 * 1024 / p.Seconds / 1e9).Within(1e-9));
                Assert.That(p.FractionOfPeak, Is.EqualTo(p.Rate / header.PeakGBs).Within(1e-12));
            }
            Assert.That(SweepReport.Write(result, folder).All(File.Exists));
        }
        finally
        {
            Settings.CloseDevice();
        }
    }

    [Test]
    public void EveryFamilyHasSizesAndAnUnknownOneIsRefused()
    {
        foreach (var name in SweepFamily.Names)
            Assert.That(SweepFamily.Get(name).Sizes, Has.Count.GreaterThanOrEqualTo(4), name);
        Assert.Throws<ArgumentException>(() => SweepFamily.Get("fft"));
    }

    /// <summary>RFC 4180 fields: commas inside double quotes, "" for a quote.</summary>
    private static List<string[]> ParseCsv(string text)
    {
        var rows = new List<string[]>();
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var fields = new List<string>();
            var field = new System.Text.StringBuilder();
            bool quoted = false;
            for (int i = 0; i < line.Length; i++)
            {
                char c = line[i];
                if (quoted && c == '"' && i + 1 < line.Length && line[i + 1] == '"') { field.Append('"'); i++; }
                else if (c == '"') quoted = !quoted;
                else if (c == ',' && !quoted) { fields.Add(field.ToString()); field.Clear(); }
                else field.Append(c);
            }
            fields.Add(field.ToString());
            rows.Add([.. fields]);
        }
        return rows;
    }
}
