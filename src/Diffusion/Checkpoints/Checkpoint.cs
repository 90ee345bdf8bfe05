using System.Globalization;
using System.Text.Json;
using IlgpuDdpm.Diffusion.Data;
using IlgpuDdpm.Diffusion.Schedules;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Network;

namespace IlgpuDdpm.Diffusion.Checkpoints;

/// <summary>A model read from a checkpoint: the network (EMA or raw weights), its schedule and training step.</summary>
public sealed record LoadedModel(UNet Model, NoiseSchedule Schedule, long Step, UNetConfig Config, bool UsedEma) : IDisposable
{
    /// <summary>Frees the model's parameters.</summary>
    public void Dispose() => Model.Dispose();
}

/// <summary>
/// Checkpoints as safetensors files (DESIGN.md §5, docs/checkpoint-format.md):
/// <c>model.safetensors</c> holds the weights under their dotted names, the EMA weights under
/// <c>ema.&lt;name&gt;</c>, and in its metadata the model config, the schedule and the step;
/// <c>state.safetensors</c> holds Adam's moments (<c>adam.m.&lt;name&gt;</c>, <c>adam.v.&lt;name&gt;</c>)
/// and in its metadata the step, the training options and the data position, so a resumed run continues
/// exactly. Each file is written to a temporary name and renamed, so a crash never leaves half a checkpoint.
/// </summary>
public static class Checkpoint
{
    /// <summary>The weights file in a run folder.</summary>
    public const string ModelFile = "model.safetensors";
    /// <summary>The training-state file in a run folder.</summary>
    public const string StateFile = "state.safetensors";
    /// <summary>Value of the <c>format</c> metadata key.</summary>
    public const string Format = "ilgpu-ddpm/1";
    /// <summary>Prefix of the EMA copies of the weights.</summary>
    public const string EmaPrefix = "ema.";

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = false };

    /// <summary>Writes model.safetensors and state.safetensors of <paramref name="trainer"/> into <paramref name="directory"/>.</summary>
    public static void Save(string directory, Trainer trainer, SamplerState dataPosition, IReadOnlyDictionary<string, string>? extraMetadata = null)
    {
        Directory.CreateDirectory(directory);
        var model = trainer.Model;
        var parameters = model.Parameters;
        var weights = new List<SafeTensor>(2 * parameters.Count);
        foreach (var p in parameters) weights.Add(SafeTensor.F32(p.Name, p.Shape, p.ToArray()));
        for (int i = 0; i < parameters.Count; i++)
            weights.Add(SafeTensor.F32(EmaPrefix + parameters[i].Name, parameters[i].Shape, trainer.EmaWeights[i].ToArray()));
        var modelMetadata = new Dictionary<string, string>
        {
            ["format"] = Format,
            ["config"] = model.Config.ToJson(),
            ["schedule"] = JsonSerializer.Serialize(trainer.Diffusion.Schedule.Spec, Json),
            ["step"] = trainer.Step.ToString(CultureInfo.InvariantCulture),
        };
        if (extraMetadata is not null)
            foreach (var (key, value) in extraMetadata) modelMetadata.TryAdd(key, value);
        SafeTensors.Write(Path.Combine(directory, ModelFile), weights, modelMetadata);

        var state = new List<SafeTensor>(2 * parameters.Count);
        for (int i = 0; i < parameters.Count; i++)
        {
            state.Add(SafeTensor.F32("adam.m." + parameters[i].Name, parameters[i].Shape, trainer.FirstMoments[i].ToArray()));
            state.Add(SafeTensor.F32("adam.v." + parameters[i].Name, parameters[i].Shape, trainer.SecondMoments[i].ToArray()));
        }
        var stateMetadata = new Dictionary<string, string>
        {
            ["format"] = Format,
            ["step"] = trainer.Step.ToString(CultureInfo.InvariantCulture),
            ["options"] = JsonSerializer.Serialize(trainer.Options, Json),
            ["data_epoch"] = dataPosition.Epoch.ToString(CultureInfo.InvariantCulture),
            ["data_index"] = dataPosition.Index.ToString(CultureInfo.InvariantCulture),
        };
        SafeTensors.Write(Path.Combine(directory, StateFile), state, stateMetadata);
    }

    /// <summary>
    /// Loads the model of a checkpoint (a run folder or a model.safetensors file), with the EMA weights when
    /// <paramref name="useEma"/> and the file has them. Names, shapes and dtypes are checked against the config.
    /// </summary>
    public static LoadedModel Load(ComputeDevice device, string path, bool useEma = true)
    {
        string file = ModelPath(path);
        var contents = SafeTensors.Read(file);
        var config = ReadConfig(contents, file);
        var schedule = ReadSchedule(contents, file);
        long step = ReadLong(contents.Metadata, "step", file);
        bool hasEma = contents.Tensors.Keys.Any(k => k.StartsWith(EmaPrefix, StringComparison.Ordinal));
        bool usingEma = useEma && hasEma;
        var model = new UNet(device, config);
        try
        {
            foreach (var p in model.Parameters)
                p.CopyFrom(Expect(contents, (usingEma ? EmaPrefix : "") + p.Name, p.Shape, file));
        }
        catch
        {
            model.Dispose();
            throw;
        }
        return new LoadedModel(model, schedule, step, config, usingEma);
    }

    /// <summary>
    /// Rebuilds the trainer of a run folder exactly as it was saved: raw weights, EMA weights, Adam moments,
    /// step and options (<paramref name="overrides"/> replaces the saved options when given), and the data position.
    /// The caller owns the result's <see cref="Trainer.Model"/> and <see cref="Trainer.Diffusion"/> as well.
    /// </summary>
    public static Trainer Resume(ComputeDevice device, string directory, TrainingOptions? overrides, out SamplerState dataPosition)
    {
        string modelFile = ModelPath(directory);
        string stateFile = Path.Combine(Path.GetDirectoryName(modelFile)!, StateFile);
        if (!File.Exists(stateFile))
            throw new CheckpointException($"{stateFile}: missing — a run can be resumed only from a folder written by 'ddpm train'");
        var contents = SafeTensors.Read(modelFile);
        var state = SafeTensors.Read(stateFile);
        var config = ReadConfig(contents, modelFile);
        var schedule = ReadSchedule(contents, modelFile);
        long step = ReadLong(state.Metadata, "step", stateFile);
        if (step != ReadLong(contents.Metadata, "step", modelFile))
            throw new CheckpointException($"{stateFile}: step {step} does not match the model file's step {ReadLong(contents.Metadata, "step", modelFile)}");
        TrainingOptions options;
        try
        {
            options = overrides ?? JsonSerializer.Deserialize<TrainingOptions>(Metadata(state.Metadata, "options", stateFile), Json)
                ?? throw new CheckpointException($"{stateFile}: the 'options' metadata is empty");
        }
        catch (JsonException e)
        {
            throw new CheckpointException($"{stateFile}: the 'options' metadata is not valid JSON ({e.Message})");
        }
        dataPosition = new SamplerState(ReadLong(state.Metadata, "data_epoch", stateFile), (int)ReadLong(state.Metadata, "data_index", stateFile));

        var model = new UNet(device, config);
        var diffusion = new GaussianDiffusion(device, schedule);
        Trainer? trainer = null;
        try
        {
            foreach (var p in model.Parameters) p.CopyFrom(Expect(contents, p.Name, p.Shape, modelFile));
            trainer = new Trainer(model, diffusion, options);
            for (int i = 0; i < model.Parameters.Count; i++)
            {
                var p = model.Parameters[i];
                trainer.EmaWeights[i].CopyFrom(Expect(contents, EmaPrefix + p.Name, p.Shape, modelFile));
                trainer.FirstMoments[i].CopyFrom(Expect(state, "adam.m." + p.Name, p.Shape, stateFile));
                trainer.SecondMoments[i].CopyFrom(Expect(state, "adam.v." + p.Name, p.Shape, stateFile));
            }
            trainer.RestoreStep(step);
            return trainer;
        }
        catch
        {
            trainer?.Dispose();
            diffusion.Dispose();
            model.Dispose();
            throw;
        }
    }

    /// <summary>The model file of <paramref name="path"/> (a folder or the file itself); a clear error if absent.</summary>
    public static string ModelPath(string path)
    {
        if (Directory.Exists(path))
        {
            string file = Path.Combine(path, ModelFile);
            if (!File.Exists(file)) throw new CheckpointException($"{path}: no {ModelFile} in this folder — is it a run folder written by 'ddpm train'?");
            return file;
        }
        if (!File.Exists(path)) throw new CheckpointException($"{path}: no such checkpoint file or folder");
        return path;
    }

    /// <summary>The model config stored in a model file's metadata.</summary>
    public static UNetConfig ReadConfig(SafeTensorFile contents, string file)
    {
        try { return UNetConfig.FromJson(Metadata(contents.Metadata, "config", file)); }
        catch (ArgumentException e) { throw new CheckpointException($"{file}: bad model config in metadata: {e.Message}"); }
    }

    private static NoiseSchedule ReadSchedule(SafeTensorFile contents, string file)
    {
        try
        {
            var spec = JsonSerializer.Deserialize<ScheduleSpec>(Metadata(contents.Metadata, "schedule", file), Json)
                ?? throw new CheckpointException($"{file}: the 'schedule' metadata is empty");
            return spec.Build();
        }
        catch (Exception e) when (e is JsonException or ArgumentException)
        {
            throw new CheckpointException($"{file}: bad schedule in metadata: {e.Message}");
        }
    }

    private static string Metadata(IReadOnlyDictionary<string, string> metadata, string key, string file) =>
        metadata.TryGetValue(key, out var value) ? value : throw new CheckpointException($"{file}: metadata has no '{key}' entry");

    private static long ReadLong(IReadOnlyDictionary<string, string> metadata, string key, string file) =>
        long.TryParse(Metadata(metadata, key, file), NumberStyles.Integer, CultureInfo.InvariantCulture, out long v) && v >= 0
            ? v : throw new CheckpointException($"{file}: metadata '{key}' must be a non-negative integer, got '{metadata[key]}'");

    private static float[] Expect(SafeTensorFile contents, string name, int[] shape, string file)
    {
        if (!contents.Tensors.TryGetValue(name, out var tensor))
            throw new CheckpointException($"{file}: tensor '{name}' is missing (expected F32 {Shape(shape)})");
        if (tensor.DType != SafeTensorDType.F32)
            throw new CheckpointException($"{file}: tensor '{name}' has dtype {tensor.DType}, expected F32");
        if (!tensor.Shape.AsSpan().SequenceEqual(shape))
            throw new CheckpointException($"{file}: tensor '{name}' has shape {Shape(tensor.Shape)}, expected {Shape(shape)}");
        return tensor.Floats!;
    }

    private static string Shape(int[] shape) => "[" + string.Join(", ", shape) + "]";
}
