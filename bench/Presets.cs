namespace IlgpuDdpm.Bench;

/// <summary>
/// The layer geometry of a U-Net preset (DESIGN.md §4) that the kernel benchmarks take their shapes from:
/// image side and channels, base channels, per-level multipliers, the resolutions with attention, the
/// group-norm group count, the parameter count (UNetLayout's count, as tests/Network checks it).
/// </summary>
public sealed record PresetShape(string Name, int ImageSize, int InChannels, int Channels, int[] Multipliers, int[] AttentionResolutions, int Groups,
                                 int ParameterCount)
{
    /// <summary>small at 28×28×1: ch 32, mult 1,2,2, attention at 7 (the lowest resolution), 8 groups.</summary>
    public static PresetShape Small { get; } = new("small", 28, 1, 32, [1, 2, 2], [7], 8, 1_623_169);

    /// <summary>ddpm-cifar10 at 32×32×3: ch 128, mult 1,2,2,2, attention at 16, 32 groups.</summary>
    public static PresetShape DdpmCifar10 { get; } = new("ddpm-cifar10", 32, 3, 128, [1, 2, 2, 2], [16], 32, 35_746_307);

    /// <summary>The preset named <paramref name="name"/>.</summary>
    public static PresetShape Get(string name) => name switch
    {
        "small" => Small,
        "ddpm-cifar10" => DdpmCifar10,
        _ => throw new ArgumentException($"unknown preset '{name}': expected small or ddpm-cifar10"),
    };

    /// <summary>The presets of this run (<see cref="Settings.Presets"/>).</summary>
    public static IEnumerable<PresetShape> Active => Settings.Presets.Select(Get);

    /// <summary>(resolution, channels) of each level: the side halves per level, channels = ch·mult.</summary>
    public IEnumerable<(int Resolution, int Channels)> Levels =>
        Multipliers.Select((m, level) => (ImageSize >> level, Channels * m));

    /// <summary>Short tag for case names: "s" for small, "c10" for ddpm-cifar10.</summary>
    public string Tag => Name == "small" ? "small" : "cifar";
}
