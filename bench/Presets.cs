using IlgpuDdpm.Network;

namespace IlgpuDdpm.Bench;

/// <summary>
/// A U-Net preset (DESIGN.md §4) at the image size it is benchmarked at — small at 28×28×1, ddpm-cifar10 at
/// 32×32×3 — and what the kernel benchmarks take their shapes from: the <see cref="UNetConfig"/> and its
/// <see cref="ModelSummary"/> (parameter count, forward FLOPs per image).
/// </summary>
public sealed class PresetShape
{
    private PresetShape(string name, int imageSize, int inChannels, string tag)
    {
        Name = name;
        Tag = tag;
        Config = UNetConfig.FromPreset(name, imageSize, inChannels);
        Summary = ModelSummary.For(Config);
    }

    /// <summary>small at 28×28×1: ch 32, mult 1,2,2, attention at 7 (the lowest resolution), 8 groups.</summary>
    public static PresetShape Small { get; } = new("small", 28, 1, "small");

    /// <summary>ddpm-cifar10 at 32×32×3: ch 128, mult 1,2,2,2, attention at 16, 32 groups.</summary>
    public static PresetShape DdpmCifar10 { get; } = new("ddpm-cifar10", 32, 3, "cifar");

    /// <summary>The preset named <paramref name="name"/>.</summary>
    public static PresetShape Get(string name) => name switch
    {
        "small" => Small,
        "ddpm-cifar10" => DdpmCifar10,
        _ => throw new ArgumentException($"unknown preset '{name}': expected small or ddpm-cifar10"),
    };

    /// <summary>The presets of this run (<see cref="Settings.Presets"/>).</summary>
    public static IEnumerable<PresetShape> Active => Settings.Presets.Select(Get);

    /// <summary>Preset name.</summary>
    public string Name { get; }

    /// <summary>Short tag for case names: "small" or "cifar".</summary>
    public string Tag { get; }

    /// <summary>The network configuration.</summary>
    public UNetConfig Config { get; }

    /// <summary>Its per-layer summary.</summary>
    public ModelSummary Summary { get; }

    /// <summary>Image side.</summary>
    public int ImageSize => Config.ImageSize;

    /// <summary>Image channels.</summary>
    public int InChannels => Config.InChannels;

    /// <summary>Base channels (level 0).</summary>
    public int Channels => Config.Channels;

    /// <summary>Group-norm groups.</summary>
    public int Groups => Config.Groups;

    /// <summary>Trainable parameters.</summary>
    public int ParameterCount => checked((int)Summary.TotalParameters);

    /// <summary>(resolution, channels) of each level: the side halves per level, channels = ch·mult.</summary>
    public IEnumerable<(int Resolution, int Channels)> Levels =>
        Enumerable.Range(0, Config.Levels).Select(level => (Config.Resolution(level), Config.LevelChannels(level)));
}
