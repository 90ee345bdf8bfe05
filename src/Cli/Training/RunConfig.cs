using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using IlgpuDdpm.Diffusion;
using IlgpuDdpm.Diffusion.Data;
using IlgpuDdpm.Diffusion.Schedules;
using IlgpuDdpm.Network;

namespace IlgpuDdpm.Cli.Training;

/// <summary>
/// Everything that defines a training run, as written to <c>config.json</c> in the run folder: the
/// command's options, the data actually read, the model config, the device. <c>ddpm train --resume</c>
/// reads it back, so a resumed run keeps its data, model and optimizer settings.
/// </summary>
internal sealed record RunConfig
{
    [JsonPropertyName("data")] public string Data { get; init; } = "fashion-mnist";
    [JsonPropertyName("size")] public int? Size { get; init; }
    [JsonPropertyName("channels")] public int? Channels { get; init; }
    [JsonPropertyName("preset")] public string Preset { get; init; } = "small";
    [JsonPropertyName("steps")] public long? Steps { get; init; }
    [JsonPropertyName("minutes")] public double? Minutes { get; init; }
    [JsonPropertyName("batch")] public int Batch { get; init; } = 64;
    [JsonPropertyName("lr")] public double LearningRate { get; init; } = 2e-4;
    [JsonPropertyName("warmup")] public int Warmup { get; init; } = 1000;
    [JsonPropertyName("ema")] public double Ema { get; init; } = 0.9999;
    [JsonPropertyName("grad_clip")] public double GradClip { get; init; } = 1.0;
    [JsonPropertyName("flip")] public bool Flip { get; init; }
    [JsonPropertyName("schedule")] public string Schedule { get; init; } = "linear";
    [JsonPropertyName("timesteps")] public int Timesteps { get; init; } = 1000;
    [JsonPropertyName("seed")] public ulong Seed { get; init; }
    [JsonPropertyName("sample_every")] public int SampleEvery { get; init; } = 1000;
    [JsonPropertyName("sample_count")] public int SampleCount { get; init; } = 16;
    [JsonPropertyName("sample_steps")] public int SampleSteps { get; init; } = 50;
    [JsonPropertyName("checkpoint_every")] public int CheckpointEvery { get; init; } = 1000;
    [JsonPropertyName("log_every")] public int LogEvery { get; init; } = 10;
    [JsonPropertyName("print_every")] public int PrintEvery { get; init; } = 100;
    [JsonPropertyName("score_every")] public int ScoreEvery { get; init; }
    [JsonPropertyName("score_n")] public int ScoreN { get; init; } = 2000;
    [JsonPropertyName("score_at_end")] public bool ScoreAtEnd { get; init; }
    [JsonPropertyName("classifier")] public string? Classifier { get; init; }

    /// <summary>The run's id, also in the metadata of both checkpoint files (a resume checks they agree).</summary>
    [JsonPropertyName("run_id")] public string? RunId { get; init; }

    // Filled in by the run (informational; not read back as options).
    [JsonPropertyName("device_choice")] public string? DeviceChoice { get; init; }
    [JsonPropertyName("device")] public string? Device { get; init; }
    [JsonPropertyName("data_source")] public string? DataSource { get; init; }
    [JsonPropertyName("images")] public int? Images { get; init; }
    [JsonPropertyName("image_shape")] public int[]? ImageShape { get; init; }
    [JsonPropertyName("parameters")] public long? Parameters { get; init; }
    [JsonPropertyName("model")] public JsonNode? Model { get; init; }
    [JsonPropertyName("created")] public string? Created { get; init; }
    [JsonPropertyName("resumed")] public List<string>? Resumed { get; init; }

    private static readonly JsonSerializerOptions Options = new()
    {
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    /// <summary>
    /// The training split these options name and the preset's U-Net for its image shape, with the train command's
    /// one-line errors (images that are not square, a preset that does not fit them). Shared by a run and
    /// <c>--profile</c>, so both refuse the same input the same way.
    /// </summary>
    public (ImageDataset Data, UNetConfig Model) LoadTrainingData()
    {
        var data = ImageDataset.Load(Data, Size, Channels, DatasetSplit.Train);
        if (data.Height != data.Width)
            throw new CliException($"{data.Source}: images are {data.Height}x{data.Width}; the U-Net needs square images (pass --size S to centre-crop and resize)");
        try
        {
            return (data, UNetConfig.FromPreset(Preset, data.Height, data.Channels));
        }
        catch (ArgumentException e)
        {
            throw new UsageException($"--preset {Preset} does not fit {data.Channels}x{data.Height}x{data.Width} images from {data.Source}: {Program.OneLine(e.Message)} (pass --size S to resize)");
        }
    }

    /// <summary>The noise schedule these options name (<c>--schedule</c>, <c>--timesteps</c>).</summary>
    public NoiseSchedule BuildSchedule() => new ScheduleSpec(Schedule == "cosine" ? ScheduleKind.Cosine : ScheduleKind.Linear, Timesteps).Build();

    /// <summary>The trainer's hyper-parameters from these options.</summary>
    public TrainingOptions TrainingOptions() => new()
    {
        BatchSize = Batch,
        LearningRate = LearningRate,
        WarmupSteps = Warmup,
        GradClip = (float)GradClip,
        EmaDecay = Ema,
        Seed = Seed,
        RandomFlip = Flip,
    };

    /// <summary>The largest config.json read (a written one is about 1 KB).</summary>
    public const int MaxBytes = 1 << 20;

    public string ToJson() => JsonSerializer.Serialize(this, Options);

    /// <summary>Writes the file (temp file + rename, so a crash never leaves half a config).</summary>
    public void Save(string path)
    {
        var temp = path + ".tmp";
        File.WriteAllText(temp, ToJson() + "\n");
        File.Move(temp, path, overwrite: true);
    }

    /// <summary>The first value the train command would have refused, as "key: what was expected"; null when none.</summary>
    private string? Problem()
    {
        if (string.IsNullOrWhiteSpace(Data)) return "data: expected a data set name or path";
        if (!Network.UNetConfig.PresetNames.Contains(Preset)) return $"preset: '{Preset}' is not one of {string.Join(", ", Network.UNetConfig.PresetNames)}";
        if (Schedule is not ("linear" or "cosine")) return $"schedule: '{Schedule}' is not linear or cosine";
        if (Size is < 1 || Channels is not (null or 1 or 3)) return "size/channels: expected a positive size and 1 or 3 channels";
        if (Steps is < 1 || Minutes is { } m && !(m > 0 && double.IsFinite(m))) return "steps/minutes: expected a positive value";
        if (Batch < 1 || Warmup < 0 || Timesteps is < 2 or > 100_000) return "batch, warmup, timesteps: expected batch ≥ 1, warmup ≥ 0, 2 ≤ timesteps ≤ 100000";
        if (!(LearningRate > 0 && double.IsFinite(LearningRate)) || !(GradClip > 0 && double.IsFinite(GradClip)) || !(Ema is >= 0 and < 1))
            return "lr, grad_clip, ema: expected lr > 0, grad_clip > 0, 0 ≤ ema < 1";
        if (SampleEvery < 0 || SampleCount is < 1 or > 1024 || SampleSteps < 1 || CheckpointEvery < 0 || LogEvery < 1 || PrintEvery < 1)
            return "sample_every, sample_count, sample_steps, checkpoint_every, log_every, print_every: out of range";
        return null;
    }

    /// <summary>Reads a run's config.json; a <see cref="CliException"/> naming the file when it is missing or unreadable.</summary>
    public static RunConfig Load(string path)
    {
        if (!File.Exists(path))
            throw new CliException($"{path}: not found; expected the config.json of a training run (is this a run folder made by 'ddpm train'?)");
        long length = new FileInfo(path).Length;
        if (length > MaxBytes)
            throw new CliException($"{path}: {length} bytes; a run's config.json is a few kilobytes (at most {MaxBytes})");
        try
        {
            var config = JsonSerializer.Deserialize<RunConfig>(File.ReadAllText(path), Options)
                         ?? throw new CliException($"{path}: empty; expected a training run's config");
            if (config.Problem() is { } problem) throw new CliException($"{path}: not a valid run config ({problem})");
            return config;
        }
        catch (JsonException e)
        {
            throw new CliException($"{path}: not a valid run config ({Program.OneLine(e.Message)})");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CliException($"{path}: cannot read ({Program.OneLine(e.Message)})");
        }
    }
}
