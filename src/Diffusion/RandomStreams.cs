namespace IlgpuDdpm.Diffusion;

/// <summary>
/// The Philox stream id of each consumer of random numbers (DESIGN.md §2). A draw is keyed by
/// (run seed, stream, offset), so each consumer gets its own sequence and a resumed run, given the same
/// step, draws exactly what an uninterrupted run would have drawn.
/// </summary>
public static class RandomStreams
{
    /// <summary>Per-sample timesteps t ~ U{0..T−1} (Algorithm 1, line 3).</summary>
    public const uint Timesteps = 1;
    /// <summary>Training noise ε ~ N(0, I) (Algorithm 1, line 4).</summary>
    public const uint TrainingNoise = 2;
    /// <summary>Dropout masks in the U-Net.</summary>
    public const uint Dropout = 3;
    /// <summary>x_T ~ N(0, I) of a sampling run (Algorithm 2, line 1).</summary>
    public const uint SampleStart = 4;
    /// <summary>z ~ N(0, I) of each sampling step (Algorithm 2, line 4).</summary>
    public const uint SampleSteps = 5;
    /// <summary>Noise used by evaluation (bits/dim, L_simple on the test set).</summary>
    public const uint Evaluation = 6;
    /// <summary>Timesteps drawn by evaluation.</summary>
    public const uint EvaluationTimesteps = 7;
}
