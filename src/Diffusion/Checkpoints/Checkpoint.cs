using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
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
/// <c>ema.&lt;name&gt;</c>, and in its metadata the model config, the schedule, the step and the run id;
/// <c>state.safetensors</c> holds Adam's moments (<c>adam.m.&lt;name&gt;</c>, <c>adam.v.&lt;name&gt;</c>)
/// and in its metadata the same step and run id, the training options and the data position, so a resumed
/// run continues exactly.
/// <para>
/// In a run folder the pair lives in a step-stamped folder, <c>checkpoints/step-NNNNNNNN/</c>, and the small
/// manifest <c>checkpoint.json</c> names the current pair. A save writes both files first and then replaces
/// the manifest with one atomic rename, so a kill at any moment leaves the manifest naming a complete pair;
/// the previous pair is kept (readers that looked at the old manifest still find their files) and older ones
/// are removed. A folder with <c>model.safetensors</c> (+ <c>state.safetensors</c>) and no manifest (runs
/// written before the manifest, or a copied pair) is read as it is.
/// </para>
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
    /// <summary>The manifest naming a run folder's current checkpoint pair.</summary>
    public const string ManifestFile = "checkpoint.json";
    /// <summary>The folder of a run folder holding the step-stamped checkpoint pairs.</summary>
    public const string PairsFolder = "checkpoints";
    /// <summary>Metadata key of the run id both files of a pair carry.</summary>
    public const string RunIdKey = "run_id";

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = false };

    /// <summary>
    /// Saves <paramref name="trainer"/> as the current checkpoint pair of the run folder <paramref name="directory"/>:
    /// model.safetensors and state.safetensors under <c>checkpoints/step-NNNNNNNN/</c>, both stamped with
    /// <paramref name="runId"/> and the step, then <c>checkpoint.json</c> renamed over the old manifest. The
    /// caller must be the folder's only writer (the CLI holds the run lock). A failed write (a full disk) leaves
    /// the previous pair current and throws a <see cref="CheckpointException"/> saying so.
    /// </summary>
    public static void Save(string directory, Trainer trainer, SamplerState dataPosition, string runId,
                            IReadOnlyDictionary<string, string>? extraMetadata = null) =>
        Save(directory, trainer, dataPosition, runId, extraMetadata, create: null);

    /// <summary>Saves with a fresh run id (tests and one-off saves).</summary>
    public static void Save(string directory, Trainer trainer, SamplerState dataPosition) =>
        Save(directory, trainer, dataPosition, NewRunId(), null, create: null);

    /// <summary>A new random run id (32 hex digits).</summary>
    public static string NewRunId() => Guid.NewGuid().ToString("N");

    /// <summary>
    /// <see cref="Save(string, Trainer, SamplerState, string, IReadOnlyDictionary{string, string}?)"/> writing
    /// each file through <paramref name="create"/> (tests pass a stream that fails halfway).
    /// </summary>
    internal static void Save(string directory, Trainer trainer, SamplerState dataPosition, string runId,
                              IReadOnlyDictionary<string, string>? extraMetadata, Func<string, Stream>? create)
    {
        ArgumentException.ThrowIfNullOrEmpty(runId);
        Directory.CreateDirectory(directory);
        var previous = TryReadManifest(directory);
        long step = trainer.Step;
        string stepText = step.ToString(CultureInfo.InvariantCulture);
        // A folder name the current manifest does not use (re-saving the step it names writes beside it).
        string name = $"step-{step:D8}";
        if (previous is not null && SameFolder(previous.Model, $"{PairsFolder}/{name}")) name += ".1";
        string pairFolder = Path.Combine(directory, PairsFolder, name);
        string modelFile = Path.Combine(pairFolder, ModelFile), stateFile = Path.Combine(pairFolder, StateFile);

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
            ["step"] = stepText,
            [RunIdKey] = runId,
        };
        if (extraMetadata is not null)
            foreach (var (key, value) in extraMetadata) modelMetadata.TryAdd(key, value);

        var state = new List<SafeTensor>(2 * parameters.Count);
        for (int i = 0; i < parameters.Count; i++)
        {
            state.Add(SafeTensor.F32("adam.m." + parameters[i].Name, parameters[i].Shape, trainer.FirstMoments[i].ToArray()));
            state.Add(SafeTensor.F32("adam.v." + parameters[i].Name, parameters[i].Shape, trainer.SecondMoments[i].ToArray()));
        }
        var stateMetadata = new Dictionary<string, string>
        {
            ["format"] = Format,
            ["step"] = stepText,
            [RunIdKey] = runId,
            ["options"] = JsonSerializer.Serialize(trainer.Options, Json),
            ["data_epoch"] = dataPosition.Epoch.ToString(CultureInfo.InvariantCulture),
            ["data_index"] = dataPosition.Index.ToString(CultureInfo.InvariantCulture),
        };

        var manifest = new Manifest(Format, runId, step, $"{PairsFolder}/{name}/{ModelFile}", $"{PairsFolder}/{name}/{StateFile}");
        try
        {
            DeleteTree(pairFolder); // a half-written pair of a killed save
            SafeTensors.Write(modelFile, weights, modelMetadata, create);
            SafeTensors.Write(stateFile, state, stateMetadata, create);
            // The commit point: until this rename the previous manifest (and pair) is the checkpoint.
            WriteAtomically(Path.Combine(directory, ManifestFile), JsonSerializer.SerializeToUtf8Bytes(manifest, Json), create);
        }
        catch (Exception e) when (e is CheckpointException or IOException or UnauthorizedAccessException)
        {
            DeleteTree(pairFolder);
            string kept = previous is null ? "no earlier checkpoint exists" : $"the previous checkpoint (step {previous.Step}) is kept and the run can be resumed from it";
            string reason = e is CheckpointException ? e.Message : $"{e.Message.ReplaceLineEndings(" ").Trim()}";
            throw new CheckpointException($"{directory}: could not save the checkpoint of step {step} ({reason}); {kept}", e);
        }
        Prune(directory, keep: [manifest.Model, previous?.Model]);
    }

    /// <summary>Removes pairs other than <paramref name="keep"/>, and the top-level files of a pre-manifest run.</summary>
    private static void Prune(string directory, string?[] keep)
    {
        string pairs = Path.Combine(directory, PairsFolder);
        foreach (var folder in Directory.EnumerateDirectories(pairs))
        {
            string relative = $"{PairsFolder}/{Path.GetFileName(folder)}";
            if (!keep.Any(k => k is not null && SameFolder(k, relative))) DeleteTree(folder);
        }
        foreach (var legacy in new[] { ModelFile, StateFile })
            TryDelete(Path.Combine(directory, legacy));
    }

    private static bool SameFolder(string file, string folder) =>
        string.Equals(Path.GetDirectoryName(file)?.Replace('\\', '/'), folder, StringComparison.Ordinal);

    private static void DeleteTree(string folder)
    {
        try { if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    private static void TryDelete(string file)
    {
        try { if (File.Exists(file)) File.Delete(file); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    // Temp file in the same folder, flushed to disk, renamed over the target (atomic on one file system).
    private static void WriteAtomically(string path, byte[] bytes, Func<string, Stream>? create)
    {
        string temp = $"{path}.{Environment.ProcessId}.tmp";
        try
        {
            using (var f = create?.Invoke(temp) ?? new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
            {
                f.Write(bytes);
                if (f is FileStream fs) fs.Flush(flushToDisk: true); else f.Flush();
            }
            File.Move(temp, path, overwrite: true);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
    }

    /// <summary>
    /// Loads the model of a checkpoint (a run folder, a folder holding a pair, or a model.safetensors file), with
    /// the EMA weights when <paramref name="useEma"/> and the file has them. Names, shapes and dtypes are checked
    /// against the config; when the state file of the pair is there, its run id and step must match the model's.
    /// </summary>
    public static LoadedModel Load(ComputeDevice device, string path, bool useEma = true)
    {
        var pair = Locate(path);
        var contents = SafeTensors.Read(pair.ModelFile);
        if (pair.StateFile is not null) VerifyPair(pair, contents.Metadata, SafeTensors.ReadHeader(pair.StateFile).Metadata);
        string file = pair.ModelFile;
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
    public static Trainer Resume(ComputeDevice device, string directory, TrainingOptions? overrides, out SamplerState dataPosition) =>
        Resume(device, directory, overrides, out dataPosition, out _);

    /// <summary>
    /// <see cref="Resume(ComputeDevice, string, TrainingOptions?, out SamplerState)"/>, also giving the pair's run
    /// id (null for a pair saved before run ids). A pair whose two files disagree on run id or step is refused.
    /// </summary>
    public static Trainer Resume(ComputeDevice device, string directory, TrainingOptions? overrides, out SamplerState dataPosition, out string? runId)
    {
        var pair = Locate(directory);
        string modelFile = pair.ModelFile;
        string stateFile = pair.StateFile
            ?? throw new CheckpointException($"{Path.Combine(Path.GetDirectoryName(modelFile)!, StateFile)}: missing — a run can be resumed only from a folder written by 'ddpm train'");
        var contents = SafeTensors.Read(modelFile);
        var state = SafeTensors.Read(stateFile);
        VerifyPair(pair, contents.Metadata, state.Metadata);
        runId = contents.Metadata.GetValueOrDefault(RunIdKey);
        var config = ReadConfig(contents, modelFile);
        var schedule = ReadSchedule(contents, modelFile);
        long step = ReadLong(state.Metadata, "step", stateFile);
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
        long dataIndex = ReadLong(state.Metadata, "data_index", stateFile);
        if (dataIndex > int.MaxValue) throw new CheckpointException($"{stateFile}: metadata 'data_index' {dataIndex} is out of range");
        dataPosition = new SamplerState(ReadLong(state.Metadata, "data_epoch", stateFile), (int)dataIndex);

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
    public static string ModelPath(string path) => Locate(path).ModelFile;

    /// <summary>True when <paramref name="directory"/> holds a checkpoint (a manifest, or a model.safetensors).</summary>
    public static bool Exists(string directory) =>
        File.Exists(Path.Combine(directory, ManifestFile)) || File.Exists(Path.Combine(directory, ModelFile));

    /// <summary>
    /// The checkpoint pair <paramref name="path"/> names: for a folder, the pair its checkpoint.json names, else its
    /// own model.safetensors (+ state.safetensors); for a file, that file (+ the state.safetensors beside it).
    /// </summary>
    public static CheckpointPair Locate(string path)
    {
        if (Directory.Exists(path))
        {
            if (TryReadManifest(path) is { } manifest)
            {
                string model = Path.Combine(path, manifest.Model), state = Path.Combine(path, manifest.State);
                string manifestFile = Path.Combine(path, ManifestFile);
                if (!File.Exists(model)) throw new CheckpointException($"{manifestFile}: names {manifest.Model}, which is missing; the run folder is damaged");
                if (!File.Exists(state)) throw new CheckpointException($"{manifestFile}: names {manifest.State}, which is missing; the run folder is damaged");
                return new CheckpointPair(model, state, manifest);
            }
            string file = Path.Combine(path, ModelFile);
            if (!File.Exists(file)) throw new CheckpointException($"{path}: no {ManifestFile} or {ModelFile} in this folder — is it a run folder written by 'ddpm train'?");
            return WithState(file);
        }
        if (!File.Exists(path)) throw new CheckpointException($"{path}: no such checkpoint file or folder");
        return WithState(path);

        static CheckpointPair WithState(string model)
        {
            string state = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(model))!, StateFile);
            return new CheckpointPair(model, File.Exists(state) ? state : null, null);
        }
    }

    /// <summary>The manifest of <paramref name="directory"/>, or null when it has none; a damaged one is refused.</summary>
    internal static Manifest? TryReadManifest(string directory)
    {
        string file = Path.Combine(directory, ManifestFile);
        if (!File.Exists(file)) return null;
        Manifest? manifest;
        try
        {
            var bytes = File.ReadAllBytes(file);
            if (bytes.Length > 64 * 1024) throw new CheckpointException($"{file}: {bytes.Length} bytes; a checkpoint manifest is a few hundred");
            manifest = JsonSerializer.Deserialize<Manifest>(bytes, Json);
        }
        catch (JsonException e)
        {
            throw new CheckpointException($"{file}: not a valid checkpoint manifest ({e.Message.ReplaceLineEndings(" ")})");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CheckpointException($"{file}: cannot read ({e.Message})");
        }
        if (manifest is null || string.IsNullOrEmpty(manifest.RunId) || manifest.Step < 0 || !Inside(manifest.Model) || !Inside(manifest.State))
            throw new CheckpointException($"{file}: not a valid checkpoint manifest (expected run_id, a step ≥ 0, and model and state paths under {PairsFolder}/)");
        return manifest;

        static bool Inside(string? relative) =>
            relative is not null && relative.StartsWith(PairsFolder + "/", StringComparison.Ordinal)
            && !relative.Split('/').Any(part => part is "" or "." or "..") && !Path.IsPathRooted(relative);
    }

    /// <summary>Refuses a pair whose files (and manifest) disagree on the run id or the step.</summary>
    private static void VerifyPair(CheckpointPair pair, IReadOnlyDictionary<string, string> model, IReadOnlyDictionary<string, string> state)
    {
        string stateFile = pair.StateFile!;
        long modelStep = ReadLong(model, "step", pair.ModelFile), stateStep = ReadLong(state, "step", stateFile);
        string modelRun = model.GetValueOrDefault(RunIdKey) ?? "(none)", stateRun = state.GetValueOrDefault(RunIdKey) ?? "(none)";
        if (modelStep != stateStep || modelRun != stateRun)
            throw new CheckpointException($"{stateFile}: does not belong with {pair.ModelFile}: the state is run {stateRun} at step {stateStep}, the model run {modelRun} at step {modelStep}; " +
                                          "the two files of a checkpoint must come from one save (restore both, or resume from a complete pair)");
        if (pair.Manifest is { } m && (m.Step != modelStep || m.RunId != modelRun))
            throw new CheckpointException($"{Path.Combine(Path.GetDirectoryName(Path.GetDirectoryName(Path.GetDirectoryName(pair.ModelFile)))!, ManifestFile)}: " +
                                          $"names run {m.RunId} at step {m.Step}, but {pair.ModelFile} is run {modelRun} at step {modelStep}; the run folder is damaged");
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

/// <summary>The two files of one checkpoint; <see cref="StateFile"/> is null where only a model file exists.</summary>
/// <param name="Manifest">The run folder's manifest that named the pair, if any.</param>
public sealed record CheckpointPair(string ModelFile, string? StateFile, Manifest? Manifest);

/// <summary>A run folder's <c>checkpoint.json</c>: the current pair, its run id and step (docs/checkpoint-format.md).</summary>
public sealed record Manifest(
    [property: JsonPropertyName("format")] string Format,
    [property: JsonPropertyName("run_id")] string RunId,
    [property: JsonPropertyName("step")] long Step,
    [property: JsonPropertyName("model")] string Model,
    [property: JsonPropertyName("state")] string State);
