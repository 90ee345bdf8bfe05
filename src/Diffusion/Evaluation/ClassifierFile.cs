using System.Text.Json;
using IlgpuDdpm.Diffusion.Checkpoints;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Network;

namespace IlgpuDdpm.Diffusion.Evaluation;

/// <summary>
/// The evaluation classifier as a safetensors file (DESIGN.md §5): its weights under their dotted names
/// (<c>stem.weight</c>, <c>level.1.down.weight</c>, …, <c>head.bias</c>) and, in the metadata, the format,
/// the architecture and whatever the trainer adds (seed, steps, test accuracy). Nothing time-dependent is
/// written, so retraining with the same command gives the same bytes.
/// </summary>
public static class ClassifierFile
{
    /// <summary>Value of the <c>format</c> metadata key.</summary>
    public const string Format = "ilgpu-ddpm-classifier/1";

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = false };

    /// <summary>Writes <paramref name="classifier"/> to <paramref name="path"/> (atomically, as every safetensors write).</summary>
    public static void Save(string path, Classifier classifier, IReadOnlyDictionary<string, string>? extraMetadata = null)
    {
        var tensors = classifier.Parameters.Select(p => SafeTensor.F32(p.Name, p.Shape, p.ToArray())).ToList();
        var metadata = new Dictionary<string, string>
        {
            ["format"] = Format,
            ["config"] = JsonSerializer.Serialize(classifier.Config, Json),
        };
        if (extraMetadata is not null)
            foreach (var (k, v) in extraMetadata) metadata.TryAdd(k, v);
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        SafeTensors.Write(path, tensors, metadata);
    }

    /// <summary>Loads a classifier file onto <paramref name="device"/>; a one-line <see cref="CheckpointException"/> for anything wrong.</summary>
    public static Classifier Load(ComputeDevice device, string path)
    {
        var config = ReadConfig(path, out var contents);
        var classifier = new Classifier(device, config);
        try
        {
            foreach (var p in classifier.Parameters) p.CopyFrom(contents.GetFloats(p.Name, p.Shape));
        }
        catch
        {
            classifier.Dispose();
            throw;
        }
        return classifier;
    }

    /// <summary>The architecture stored in a classifier file (reads the whole file).</summary>
    public static ClassifierConfig ReadConfig(string path) => ReadConfig(path, out _);

    /// <summary>A metadata value of a classifier file, or null.</summary>
    public static string? ReadMetadata(string path, string key) =>
        SafeTensors.ReadHeader(CheckExists(path)).Metadata.TryGetValue(key, out var v) ? v : null;

    private static ClassifierConfig ReadConfig(string path, out SafeTensorFile contents)
    {
        contents = SafeTensors.Read(CheckExists(path));
        if (!contents.Metadata.TryGetValue("format", out var format) || format != Format)
            throw new CheckpointException($"{path}: not a classifier file (metadata 'format' is {(format is null ? "missing" : $"'{format}'")}; expected '{Format}')");
        try
        {
            var config = JsonSerializer.Deserialize<ClassifierConfig>(contents.GetMetadata("config"), Json)
                ?? throw new CheckpointException($"{path}: the 'config' metadata is empty");
            return config.Validate();
        }
        catch (Exception e) when (e is JsonException or ArgumentException or NullReferenceException)
        {
            throw new CheckpointException($"{path}: the 'config' metadata is not a valid classifier config ({Program1Line(e.Message)})");
        }
    }

    private static string CheckExists(string path) =>
        File.Exists(path) ? path : throw new CheckpointException($"classifier file {path} not found");

    private static string Program1Line(string message) => message.Split('\n')[0].Trim();
}
