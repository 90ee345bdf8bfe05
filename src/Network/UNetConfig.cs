using System.Text.Json;
using System.Text.Json.Serialization;

namespace IlgpuDdpm.Network;

/// <summary>
/// The shape of a U-Net (DESIGN.md §4): image size and channels of the data, base width <c>ch</c>, one
/// width multiplier per level, ResBlocks per level, the resolutions that get self-attention, GroupNorm
/// groups and dropout. The time embedding has <see cref="TimeEmbeddingDim"/> = 4·ch entries and the
/// timestep sinusoid <c>ch</c>. Build one from a preset (<see cref="FromPreset"/>) or by hand, then
/// <see cref="Validate"/>; <see cref="ToJson"/> / <see cref="FromJson"/> store it in checkpoints.
/// Level <c>l</c> runs at resolution <c>ImageSize / 2^l</c> with <c>ch·mult[l]</c> channels.
/// </summary>
public sealed record UNetConfig
{
    /// <summary>The preset names, in the order the CLI lists them.</summary>
    public static IReadOnlyList<string> PresetNames { get; } = ["tiny", "small", "ddpm-cifar10"];

    /// <summary>Height and width of the (square) images.</summary>
    public int ImageSize { get; init; }

    /// <summary>Channels of the images (1 for grey, 3 for RGB); the output ε̂ has as many.</summary>
    public int InChannels { get; init; }

    /// <summary>Base width <c>ch</c>: the head's output channels and the sinusoid length.</summary>
    public int Channels { get; init; }

    /// <summary>Width multiplier of each level; its length is the number of levels.</summary>
    public IReadOnlyList<int> ChannelMultipliers { get; init; } = [];

    /// <summary>ResBlocks per level on the down path (the up path has one more).</summary>
    public int NumResBlocks { get; init; }

    /// <summary>Resolutions (of a level) at which every ResBlock is followed by self-attention.</summary>
    public IReadOnlyList<int> AttentionResolutions { get; init; } = [];

    /// <summary>GroupNorm groups (every channel count must divide by it).</summary>
    public int Groups { get; init; } = 8;

    /// <summary>Dropout probability inside each ResBlock (training only), in [0, 1).</summary>
    public float Dropout { get; init; }

    /// <summary>The nonlinearity of every ResBlock, the time embedding and the tail (default SiLU, as in the DDPM paper).</summary>
    public Activation Activation { get; init; } = Activation.Silu;

    /// <summary>Width of the time embedding: 4·ch.</summary>
    [JsonIgnore] public int TimeEmbeddingDim => 4 * Channels;

    /// <summary>Number of levels (resolutions) of the U-Net.</summary>
    [JsonIgnore] public int Levels => ChannelMultipliers.Count;

    /// <summary>Resolution of level <paramref name="level"/>: ImageSize / 2^level.</summary>
    public int Resolution(int level) => ImageSize >> level;

    /// <summary>Channels of level <paramref name="level"/>: ch·mult[level].</summary>
    public int LevelChannels(int level) => Channels * ChannelMultipliers[level];

    /// <summary>The resolution of the last (lowest) level.</summary>
    [JsonIgnore] public int LowestResolution => Resolution(Levels - 1);

    /// <summary>Whether ResBlocks at <paramref name="resolution"/> are followed by self-attention.</summary>
    public bool HasAttention(int resolution) => AttentionResolutions.Contains(resolution);

    // ---------------------------------------------------------------- presets

    /// <summary>
    /// The preset <paramref name="name"/> (DESIGN.md §4 table) for images of
    /// <paramref name="imageSize"/>² × <paramref name="inChannels"/>, validated. "Lowest resolution"
    /// attention means the resolution of the last level for that image size.
    /// </summary>
    public static UNetConfig FromPreset(string name, int imageSize, int inChannels)
    {
        var config = (name ?? "").Trim().ToLowerInvariant() switch
        {
            "tiny" => Lowest(new UNetConfig
            {
                ImageSize = imageSize, InChannels = inChannels, Channels = 16, ChannelMultipliers = [1, 2],
                NumResBlocks = 1, Groups = 4, Dropout = 0f,
            }),
            "small" => Lowest(new UNetConfig
            {
                ImageSize = imageSize, InChannels = inChannels, Channels = 32, ChannelMultipliers = [1, 2, 2],
                NumResBlocks = 2, Groups = 8, Dropout = 0.1f,
            }),
            "ddpm-cifar10" => new UNetConfig
            {
                ImageSize = imageSize, InChannels = inChannels, Channels = 128, ChannelMultipliers = [1, 2, 2, 2],
                NumResBlocks = 2, AttentionResolutions = [16], Groups = 32, Dropout = 0.1f,
            },
            _ => throw new ArgumentException($"unknown model preset '{name}': expected {string.Join(", ", PresetNames)}"),
        };
        config.Validate();
        return config;
    }

    /// <summary>tiny: ch 16, mult 1,2, 1 ResBlock, attention at the lowest resolution, 4 groups, no dropout.</summary>
    public static UNetConfig Tiny(int imageSize = 28, int inChannels = 1) => FromPreset("tiny", imageSize, inChannels);

    /// <summary>small: ch 32, mult 1,2,2, 2 ResBlocks, attention at the lowest resolution, 8 groups, dropout 0.1.</summary>
    public static UNetConfig Small(int imageSize = 28, int inChannels = 1) => FromPreset("small", imageSize, inChannels);

    /// <summary>ddpm-cifar10: the DDPM paper's CIFAR-10 model (ch 128, mult 1,2,2,2, 2 ResBlocks, attention at 16, 32 groups, dropout 0.1).</summary>
    public static UNetConfig DdpmCifar10(int imageSize = 32, int inChannels = 3) => FromPreset("ddpm-cifar10", imageSize, inChannels);

    // Attention at the last level's resolution; left empty when the image size does not divide (Validate then says why).
    private static UNetConfig Lowest(UNetConfig c)
    {
        int div = 1 << Math.Min(c.Levels - 1, 30);
        return c.ImageSize > 0 && c.ImageSize % div == 0 ? c with { AttentionResolutions = [c.ImageSize / div] } : c;
    }

    // ---------------------------------------------------------------- validation

    /// <summary>The first thing wrong with this config as one line, or null when it is valid.</summary>
    public string? ValidationError()
    {
        if (ImageSize <= 0) return $"image size must be positive, got {ImageSize}";
        if (InChannels <= 0) return $"in channels must be positive, got {InChannels}";
        if (Channels < 4 || Channels % 2 != 0)
            return $"ch must be even and at least 4 (the timestep sinusoid has ch/2 ≥ 2 frequencies), got {Channels}";
        if (ChannelMultipliers is null || ChannelMultipliers.Count == 0) return "channel multipliers must list at least one level";
        if (ChannelMultipliers.Count > 16) return $"at most 16 levels are supported, got {ChannelMultipliers.Count}";
        for (int l = 0; l < Levels; l++)
            if (ChannelMultipliers[l] <= 0) return $"channel multiplier of level {l} must be positive, got {ChannelMultipliers[l]}";
        if (NumResBlocks < 1) return $"res blocks per level must be at least 1, got {NumResBlocks}";
        int div = 1 << (Levels - 1);
        if (ImageSize % div != 0)
            return $"image size {ImageSize} must be divisible by {div} for {Levels} levels";
        if (Groups <= 0) return $"groups must be positive, got {Groups}";
        // Every GroupNorm sees ch·mult[l] channels or a sum of them (skip concat), so ch | groups is enough.
        if (Channels % Groups != 0) return $"ch {Channels} must be divisible by groups {Groups}";
        if (!(Dropout >= 0f && Dropout < 1f)) return $"dropout must be in [0, 1), got {Dropout}";
        if (!Activations.All.Contains(Activation)) return $"activation {(int)Activation} is not one of {ActivationNames}";
        if (AttentionResolutions is null) return "attention resolutions must be a list (possibly empty)";
        var levels = Enumerable.Range(0, Levels).Select(Resolution).ToArray();
        foreach (int r in AttentionResolutions)
            if (!levels.Contains(r))
                return $"attention resolution {r} is not the resolution of any level (levels: {string.Join(", ", levels)})";
        long length = (long)LevelChannels(0) * 2 * ImageSize * ImageSize; // widest concat of one image
        if (length > int.MaxValue) return $"image size {ImageSize} with ch {Channels} exceeds 32-bit tensor indices";
        return null;
    }

    /// <summary>Throws <see cref="ArgumentException"/> with a one-line message when the config is invalid.</summary>
    public UNetConfig Validate()
    {
        var error = ValidationError();
        if (error is not null) throw new ArgumentException($"invalid model config: {error}");
        return this;
    }

    // ---------------------------------------------------------------- equality (lists by value)

    /// <inheritdoc/>
    public bool Equals(UNetConfig? other) =>
        other is not null &&
        ImageSize == other.ImageSize && InChannels == other.InChannels && Channels == other.Channels &&
        ChannelMultipliers.SequenceEqual(other.ChannelMultipliers) && NumResBlocks == other.NumResBlocks &&
        AttentionResolutions.SequenceEqual(other.AttentionResolutions) && Groups == other.Groups &&
        Dropout.Equals(other.Dropout) && Activation == other.Activation;

    /// <inheritdoc/>
    public override int GetHashCode()
    {
        var h = new HashCode();
        h.Add(ImageSize); h.Add(InChannels); h.Add(Channels); h.Add(NumResBlocks); h.Add(Groups); h.Add(Dropout); h.Add(Activation);
        foreach (var m in ChannelMultipliers) h.Add(m);
        h.Add(-1);
        foreach (var r in AttentionResolutions) h.Add(r);
        return h.ToHashCode();
    }

    /// <summary>
    /// e.g. "ch 16, mult [1, 2], 1 res blocks, attention at [14], 4 groups, dropout 0, 1×28×28"; an
    /// activation other than the default SiLU is named after the dropout.
    /// </summary>
    public override string ToString() =>
        $"ch {Channels}, mult [{string.Join(", ", ChannelMultipliers)}], {NumResBlocks} res blocks, " +
        $"attention at [{string.Join(", ", AttentionResolutions)}], {Groups} groups, dropout {Dropout}, " +
        (Activation == Activation.Silu ? "" : $"{Activation.DisplayName()}, ") +
        $"{InChannels}×{ImageSize}×{ImageSize}";

    private static string ActivationNames => string.Join(", ", Activations.All.Select(a => a.JsonName()));

    // ---------------------------------------------------------------- JSON

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    };

    /// <summary>
    /// The config as compact JSON with the DDPM reference code's names:
    /// <c>{"image_size":28,"in_channels":1,"ch":16,"ch_mult":[1,2],"num_res_blocks":1,"attn_resolutions":[14],"groups":4,"dropout":0}</c>.
    /// The activation is written (<c>"activation":"…"</c>, last) only when it is not the default SiLU, so
    /// SiLU configs keep the format checkpoints have always had.
    /// </summary>
    public string ToJson() => JsonSerializer.Serialize(new Dto
    {
        ImageSize = ImageSize, InChannels = InChannels, Ch = Channels, ChMult = [.. ChannelMultipliers],
        NumResBlocks = NumResBlocks, AttnResolutions = [.. AttentionResolutions], Groups = Groups, Dropout = Dropout,
        Activation = Activation == Activation.Silu ? null : Activation.JsonName(),
    }, JsonOptions);

    /// <summary>
    /// Reads <see cref="ToJson"/>'s format and validates it. Every field but the optional
    /// <c>activation</c> (default silu) is required and unknown fields are refused; any problem throws
    /// <see cref="ArgumentException"/> with one line.
    /// </summary>
    public static UNetConfig FromJson(string json)
    {
        Dto? dto;
        try
        {
            dto = JsonSerializer.Deserialize<Dto>(json, JsonOptions);
        }
        catch (JsonException e)
        {
            throw new ArgumentException($"invalid model config JSON: {OneLine(e.Message)}");
        }
        if (dto is null) throw new ArgumentException("invalid model config JSON: null");
        if (dto.ChMult is null || dto.AttnResolutions is null)
            throw new ArgumentException("invalid model config JSON: ch_mult and attn_resolutions must be arrays");
        var activation = Activation.Silu;
        if (dto.Activation is not null)
            activation = Activations.FromJsonName(dto.Activation)
                ?? throw new ArgumentException($"invalid model config JSON: activation '{dto.Activation}' is not one of {ActivationNames}");
        return new UNetConfig
        {
            ImageSize = dto.ImageSize, InChannels = dto.InChannels, Channels = dto.Ch, ChannelMultipliers = dto.ChMult,
            NumResBlocks = dto.NumResBlocks, AttentionResolutions = dto.AttnResolutions, Groups = dto.Groups, Dropout = dto.Dropout,
            Activation = activation,
        }.Validate();
    }

    private static string OneLine(string s) => s.ReplaceLineEndings(" ");

    private sealed class Dto
    {
        [JsonPropertyName("image_size")] public required int ImageSize { get; init; }
        [JsonPropertyName("in_channels")] public required int InChannels { get; init; }
        [JsonPropertyName("ch")] public required int Ch { get; init; }
        [JsonPropertyName("ch_mult")] public required int[] ChMult { get; init; }
        [JsonPropertyName("num_res_blocks")] public required int NumResBlocks { get; init; }
        [JsonPropertyName("attn_resolutions")] public required int[] AttnResolutions { get; init; }
        [JsonPropertyName("groups")] public required int Groups { get; init; }
        [JsonPropertyName("dropout")] public required float Dropout { get; init; }
        [JsonPropertyName("activation"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public string? Activation { get; init; }
    }
}
