using System.Text.Json.Serialization;

namespace IlgpuDdpm.Diffusion;

/// <summary>Which reverse process turns noise into images.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<SamplerKind>))]
public enum SamplerKind
{
    /// <summary>Ancestral sampling, Algorithm 2 of Ho et al.: all T steps.</summary>
    Ddpm,
    /// <summary>DDIM (Song et al. 2021): any strided subsequence of the steps, η = 0 deterministic.</summary>
    Ddim,
}

/// <summary>σ_t² of the reverse process (DESIGN.md §3).</summary>
[JsonConverter(typeof(JsonStringEnumConverter<VarianceKind>))]
public enum VarianceKind
{
    /// <summary>σ_t² = β_t ("fixed large"; β̃_2 at the first step, as the seed's code does).</summary>
    Large,
    /// <summary>σ_t² = β̃_t ("fixed small").</summary>
    Small,
}

/// <summary>How to sample.</summary>
public sealed record SampleOptions
{
    /// <summary>Number of images.</summary>
    public int Count { get; init; } = 64;
    /// <summary>DDPM or DDIM.</summary>
    public SamplerKind Sampler { get; init; } = SamplerKind.Ddpm;
    /// <summary>Steps of the reverse process; 0 means T for DDPM and 50 for DDIM. DDPM accepts only 0 or T.</summary>
    public int Steps { get; init; }
    /// <summary>Reverse-process variance (DDPM only).</summary>
    public VarianceKind Variance { get; init; } = VarianceKind.Large;
    /// <summary>Clip the predicted x_0 to [−1, 1] before forming the mean.</summary>
    public bool Clip { get; init; } = true;
    /// <summary>DDIM's η: 0 deterministic, 1 as stochastic as DDPM.</summary>
    public double Eta { get; init; }
    /// <summary>Seed of x_T and of every step's noise.</summary>
    public ulong Seed { get; init; }
    /// <summary>When positive, that many evenly spaced intermediate x_t (including x_T and x_0) are kept as frames.</summary>
    public int FrameCount { get; init; }
    /// <summary>
    /// Images per model call (0: all at once). The default bounds the memory of a large sampling: the tiny U-Net's
    /// activations for 2,000 images at once held 13 GiB of host memory on the CPU accelerator; each image gets the
    /// same noise whatever the batch.
    /// </summary>
    public int BatchSize { get; init; } = DefaultBatchSize;

    /// <summary>The default <see cref="BatchSize"/>: enough images per call to keep a GPU busy.</summary>
    public const int DefaultBatchSize = 256;
}

/// <summary>Generated images [Count, Channels, Height, Width] in [−1, 1] and the optional frames of the reverse process.</summary>
public sealed record SampleResult(float[] Images, IReadOnlyList<float[]> Frames, int Count, int Channels, int Height, int Width);

/// <summary>
/// The variational bound in bits per dimension, averaged over images (DESIGN.md §3):
/// <see cref="Total"/> = L_T + Σ_{t=2..T} L_{t−1} + L_0.
/// </summary>
public sealed record BpdResult(double Total, double PriorTerm, double DiffusionTerms, double DecoderTerm, int Images);
