using System.Text.Json;
using System.Text.Json.Serialization;

namespace IlgpuDdpm.Cli.Training;

/// <summary>One line of <c>metrics.jsonl</c>.</summary>
/// <param name="Step">Optimizer steps done.</param>
/// <param name="Loss">Mean L_simple over the steps since the previous line.</param>
/// <param name="GradNorm">Global gradient norm (before clipping) at <paramref name="Step"/>.</param>
/// <param name="LearningRate">Learning rate used at <paramref name="Step"/> (after warm-up scaling).</param>
/// <param name="ImagesPerSecond">Training throughput since the previous line.</param>
/// <param name="ElapsedSeconds">Wall time of this invocation so far.</param>
internal sealed record MetricsLine(
    [property: JsonPropertyName("step")] long Step,
    [property: JsonPropertyName("loss")] double Loss,
    [property: JsonPropertyName("grad_norm")] double GradNorm,
    [property: JsonPropertyName("lr")] double LearningRate,
    [property: JsonPropertyName("images_per_s")] double ImagesPerSecond,
    [property: JsonPropertyName("elapsed_s")] double ElapsedSeconds)
{
    /// <summary>Fréchet classifier distance of the EMA model's samples at this step (only on scored steps, <c>--score-every</c>).</summary>
    [JsonPropertyName("fcd"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? Fcd { get; init; }

    /// <summary>KID (mean over subsets) of those samples.</summary>
    [JsonPropertyName("kid"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? Kid { get; init; }

    /// <summary>KID's standard deviation over subsets.</summary>
    [JsonPropertyName("kid_sd"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? KidStdDev { get; init; }
}

/// <summary>
/// <c>metrics.jsonl</c>: one JSON object per logged step, appended and flushed as training goes. On
/// resume, lines past the checkpoint's step are dropped (those steps are trained again).
/// </summary>
internal sealed class MetricsLog : IDisposable
{
    private readonly StreamWriter writer;
    private readonly List<MetricsLine> lines;

    private MetricsLog(string path, List<MetricsLine> lines)
    {
        Path = path;
        this.lines = lines;
        writer = new StreamWriter(new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.Read)) { AutoFlush = true };
    }

    /// <summary>The file.</summary>
    public string Path { get; }

    /// <summary>Every line so far (earlier invocations included).</summary>
    public IReadOnlyList<MetricsLine> Lines => lines;

    /// <summary>Starts a new log at <paramref name="path"/> (an existing file is replaced).</summary>
    public static MetricsLog Create(string path)
    {
        File.WriteAllText(path, "");
        return new MetricsLog(path, []);
    }

    /// <summary>
    /// Continues the log at <paramref name="path"/> from step <paramref name="resumeStep"/>: keeps the lines up
    /// to that step and rewrites the file without the rest. Unreadable lines (a torn last line) are dropped.
    /// </summary>
    public static MetricsLog Resume(string path, long resumeStep)
    {
        var kept = new List<MetricsLine>();
        if (File.Exists(path))
        {
            foreach (var text in File.ReadLines(path))
            {
                if (string.IsNullOrWhiteSpace(text)) continue;
                MetricsLine? line;
                try { line = JsonSerializer.Deserialize<MetricsLine>(text); }
                catch (JsonException) { continue; }
                if (line is not null && line.Step <= resumeStep) kept.Add(line);
            }
        }
        var temp = path + ".tmp";
        File.WriteAllLines(temp, kept.Select(l => JsonSerializer.Serialize(l)));
        File.Move(temp, path, overwrite: true);
        return new MetricsLog(path, kept);
    }

    /// <summary>Appends <paramref name="line"/> and flushes it.</summary>
    public void Append(MetricsLine line)
    {
        lines.Add(line);
        writer.WriteLine(JsonSerializer.Serialize(line));
    }

    /// <summary>(step, loss) points for the loss plot.</summary>
    public IReadOnlyList<(int Step, float Loss)> LossPoints() =>
        lines.Select(l => ((int)Math.Min(l.Step, int.MaxValue), (float)l.Loss)).ToList();

    /// <summary>(step, FCD, KID) of the scored lines, for the loss plot's second panel.</summary>
    public IReadOnlyList<(int Step, float Fcd, float Kid)> ScorePoints() =>
        lines.Where(l => l.Fcd is not null && l.Kid is not null)
             .Select(l => ((int)Math.Min(l.Step, int.MaxValue), (float)l.Fcd!.Value, (float)l.Kid!.Value)).ToList();

    public void Dispose() => writer.Dispose();
}
