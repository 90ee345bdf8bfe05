using System.Globalization;
using System.Text;
using System.Text.Json;

namespace IlgpuDdpm.Bench;

/// <summary>
/// Writes one family's sweep as the four files of issue 9 item 5 — <c>FAMILY.csv</c>, <c>FAMILY.json</c>,
/// <c>FAMILY.md</c> (a markdown table under the device header) and <c>FAMILY.png</c> (throughput against size,
/// one line per method, the measured peak as a horizontal line) — in the style of nvbench's CSV/JSON/markdown
/// outputs and Triton's <c>perf_report</c> plots.
/// </summary>
public static class SweepReport
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>The CSV columns, in order.</summary>
    public static readonly string[] CsvColumns = ["family", "method", "case", "x", "seconds", "launches", "rate", "unit", "fraction_of_peak"];

    /// <summary>Writes the four files into <paramref name="folder"/>; returns their paths (csv, json, md, png).</summary>
    public static string[] Write(SweepResult result, string folder)
    {
        Directory.CreateDirectory(folder);
        string stem = Path.Combine(folder, result.Family);
        string[] paths = [stem + ".csv", stem + ".json", stem + ".md", stem + ".png"];
        File.WriteAllText(paths[0], Csv(result));
        File.WriteAllText(paths[1], Json(result));
        File.WriteAllText(paths[2], Markdown(result));
        SweepPlot.SavePng(result, paths[3]);
        return paths;
    }

    /// <summary>One header line and one line per point; fields quoted where they hold a comma or a quote (RFC 4180).</summary>
    public static string Csv(SweepResult result)
    {
        var text = new StringBuilder();
        text.Append(string.Join(',', CsvColumns)).Append('\n');
        foreach (var p in result.Points)
            text.Append(string.Join(',', new[]
            {
                result.Family, p.Method, p.Case, p.X.ToString("R", Inv), p.Seconds.ToString("R", Inv),
                p.Launches.ToString(Inv), p.Rate.ToString("R", Inv), result.Unit, p.FractionOfPeak.ToString("R", Inv),
            }.Select(Quote))).Append('\n');
        return text.ToString();
    }

    /// <summary>The header, the axis and every point, as one JSON object.</summary>
    public static string Json(SweepResult result)
    {
        var h = result.Header;
        return JsonSerializer.Serialize(new
        {
            family = result.Family,
            device = new { name = h.Device, kind = h.Kind, compute_units = h.ComputeUnits, compute_unit_name = h.ComputeUnitName, host = h.Host },
            peaks = new { multiply_add_gflops = h.PeakGflops, copy_gbs = h.PeakGBs },
            utc = h.Utc.ToString("yyyy-MM-ddTHH:mm:ssZ", Inv),
            quick = h.Quick,
            x_label = result.XLabel,
            unit = result.Unit,
            peak = result.Peak,
            points = result.Points.Select(p => new
            {
                method = p.Method, @case = p.Case, x = p.X, seconds = p.Seconds, launches = p.Launches,
                rate = p.Rate, fraction_of_peak = p.FractionOfPeak,
            }),
        }, new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>The device header and a table: method, case, size, time per invocation, rate, % of peak.</summary>
    public static string Markdown(SweepResult result)
    {
        var text = new StringBuilder();
        text.Append(Inv, $"## {result.Family}\n\n{HeaderLine(result.Header)}\n\n");
        text.Append(Inv, $"x: {result.XLabel}; rate in {result.Unit} against the measured peak {result.Peak:F2} {result.Unit}.\n\n");
        text.Append("| method | case | x | time / invocation | launches | ").Append(result.Unit).Append(" | % of peak |\n");
        text.Append("|:--|:--|--:|--:|--:|--:|--:|\n");
        foreach (var p in result.Points)
            text.Append(Inv, $"| {p.Method} | {p.Case} | {SweepFamily.Count(p.X)} | {Throughput.FormatSeconds(p.Seconds)} | {p.Launches} | {p.Rate:F3} | {100 * p.FractionOfPeak:F1} % |\n");
        return text.ToString();
    }

    /// <summary>"ILGPU CPU accelerator (Cpu, 2 cores); peaks measured in this run: 15.30 GFLOP/s multiply-add, 4.10 GB/s copy; 2026-12-01 08:10 UTC, quick".</summary>
    public static string HeaderLine(SweepHeader h) => string.Create(Inv,
        $"{h.Device} ({h.Kind}, {h.ComputeUnits} {h.ComputeUnitName}); peaks measured in this run: {h.PeakGflops:F2} GFLOP/s multiply-add, " +
        $"{h.PeakGBs:F2} GB/s copy; {h.Utc:yyyy-MM-dd HH:mm} UTC, {(h.Quick ? "quick" : "full")}; host {h.Host}");

    private static string Quote(string field) =>
        field.IndexOfAny([',', '"', '\n']) < 0 ? field : "\"" + field.Replace("\"", "\"\"") + "\"";
}
