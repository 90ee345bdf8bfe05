using IlgpuDdpm.Diffusion.Schedules;
using IlgpuDdpm.Kernels.Diffusion;

namespace IlgpuDdpm.Diffusion;

/// <summary>
/// A reverse process as a host-side strategy (DESIGN.md §3): which timesteps it visits and, for each step,
/// the coefficients of the one reverse-step kernel x_prev = A·x̂0 + B·x_t + σ·z, x̂0 = clip?(P·x_t − Q·ε̂)
/// (<see cref="ReverseStepCoefficients"/>, <see cref="DiffusionKernels.ReverseStep"/>). The sampling loop
/// (<see cref="GaussianDiffusion.Sample"/>) is the same for every sampler. A new sampler is one class
/// implementing this, one <see cref="SamplerKind"/> entry and one arm in <see cref="Samplers.For"/>.
/// </summary>
public interface ISampler
{
    /// <summary>
    /// The timesteps visited, from the noisiest down to 0 — the one place a sampler's step-count rule lives.
    /// Throws <see cref="ArgumentException"/> (one line) when the options ask for a count it cannot run.
    /// </summary>
    int[] Timesteps(NoiseSchedule schedule);

    /// <summary>The step from timestep <paramref name="t"/> to <paramref name="tPrev"/> (−1: the end, x_0).</summary>
    ReverseStepCoefficients Step(NoiseSchedule schedule, int t, int tPrev);

    /// <summary>A short description for the CLI, e.g. "ddpm, 1000 steps, variance large".</summary>
    string Describe(NoiseSchedule schedule);
}

/// <summary>The sampler a <see cref="SampleOptions"/> names.</summary>
public static class Samplers
{
    /// <summary>DDPM or DDIM with the options' steps, variance, η and clipping.</summary>
    public static ISampler For(SampleOptions options) => options.Sampler switch
    {
        SamplerKind.Ddpm => new DdpmSampler(options.Variance, options.Clip, options.Steps),
        SamplerKind.Ddim => new DdimSampler(options.Steps, options.Eta, options.Clip),
        _ => throw new ArgumentException($"unknown sampler {options.Sampler}"),
    };
}
