using ILGPU;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Elementwise;
using IlgpuDdpm.Kernels.Optim;
using IlgpuDdpm.Network;

namespace IlgpuDdpm.Diffusion;

/// <summary>
/// Adam(W) with global-norm gradient clipping and an optional EMA of the weights over a model's
/// <see cref="ParameterSet"/> — the one optimizer of the U-Net's <see cref="Trainer"/> and the classifier's
/// trainer. Its state (the moments, the EMA weights) lives in flat buffers laid out like the parameters, so a
/// step is a fixed handful of launches whatever the number of tensors (issue 9):
/// <list type="number">
/// <item>Σ g² per parameter tensor (<see cref="MultiTensorKernels.SumsOfSquares"/>: two launches, the same bits
/// as one reduction per tensor), then norm and clip scale min(1, clip/(norm + 1e-6)) on the device (one);</item>
/// <item>one Adam(W) launch over every parameter with the gradient times the clip scale (Kingma &amp; Ba 2015,
/// Alg. 1; decoupled decay as in AdamW — the same settings for every parameter, as before); with EMA the same
/// launch then updates ema = d·ema + (1 − d)·p (<see cref="MultiTensorKernels.AdamEma"/>).</item>
/// </list>
/// Adam and the EMA are element-wise, so one launch over the flat buffers gives exactly the numbers of one
/// launch per tensor. Nothing is read back: the norm stays on the device (<see cref="NormAndScale"/>).
/// </summary>
public sealed class ParameterOptimizer : IDisposable
{
    private readonly ParameterSet parameters;
    private readonly OptimKernels optim;
    private readonly MultiTensorKernels multi;
    private readonly AdamSettings adam;
    private readonly float gradClip;
    private readonly TensorSegments segments;
    private readonly DeviceBuffer<float> firstMoment, secondMoment;
    private readonly DeviceBuffer<float>? ema;
    private readonly DeviceBuffer<float> segmentSums, tensorSums, normAndScale;

    /// <summary>
    /// Zero moments; with <paramref name="withEma"/>, EMA weights equal to the parameters' current values.
    /// <paramref name="gradClip"/> is the global-norm bound (&gt; 0).
    /// </summary>
    public ParameterOptimizer(ParameterSet parameters, AdamSettings adam, float gradClip, bool withEma)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        adam.Validate();
        if (!(gradClip > 0)) throw new ArgumentException($"gradient clip must be positive, got {gradClip}");
        this.parameters = parameters;
        this.adam = adam;
        this.gradClip = gradClip;
        var device = parameters.Device;
        optim = device.Kernels<OptimKernels>();
        multi = device.Kernels<MultiTensorKernels>();
        segments = new TensorSegments(device, parameters.Offsets, [.. parameters.Select(p => p.Length)], parameters.Length);
        firstMoment = device.Pool.RentZeroed<float>(parameters.Length);
        secondMoment = device.Pool.RentZeroed<float>(parameters.Length);
        if (withEma)
        {
            ema = device.Pool.Rent<float>(parameters.Length);
            device.Kernels<ElementwiseKernels>().Copy(parameters.Values.View, ema.View);
        }
        segmentSums = device.Pool.Rent<float>(segments.Segments);
        tensorSums = device.Pool.Rent<float>(parameters.Count);
        normAndScale = device.Pool.Rent<float>(2);
        FirstMoments = parameters.Slices(firstMoment);
        SecondMoments = parameters.Slices(secondMoment);
        EmaWeights = ema is null ? [] : parameters.Slices(ema);
    }

    /// <summary>Adam's first moments, one window per parameter (same order; checkpoints read and write them by name).</summary>
    public IReadOnlyList<DeviceBuffer<float>> FirstMoments { get; }

    /// <summary>Adam's second moments, one window per parameter.</summary>
    public IReadOnlyList<DeviceBuffer<float>> SecondMoments { get; }

    /// <summary>The EMA weights, one window per parameter (empty without EMA).</summary>
    public IReadOnlyList<DeviceBuffer<float>> EmaWeights { get; }

    /// <summary>Every flat state buffer, for broadcasting a replica's state: moments, then the EMA weights if any.</summary>
    public IEnumerable<ArrayView<float>> StateViews =>
        ema is null ? [firstMoment.View, secondMoment.View] : [firstMoment.View, secondMoment.View, ema.View];

    /// <summary>The flat EMA weights (null without EMA).</summary>
    public DeviceBuffer<float>? Ema => ema;

    /// <summary>
    /// One update from the gradients in the parameter set: clip scale from the global norm, Adam step number
    /// <paramref name="step"/> (1-based) at <paramref name="learningRate"/>, then (with EMA) the average at
    /// <paramref name="emaDecay"/>.
    /// </summary>
    public void Step(long step, double learningRate, float emaDecay = 0f)
    {
        multi.SumsOfSquares(parameters.Gradients.View, segments, segmentSums.View, tensorSums.View);
        optim.ClipScale(tensorSums.View, parameters.Count, gradClip, normAndScale.View);
        var coefficients = adam.ForStep(step, learningRate);
        if (ema is null)
            optim.Adam(parameters.Values.View, parameters.Gradients.View, firstMoment.View, secondMoment.View, coefficients, normAndScale.View, 1);
        else
            multi.AdamEma(parameters.Values.View, parameters.Gradients.View, firstMoment.View, secondMoment.View, coefficients, normAndScale.View, 1, ema.View, emaDecay);
    }

    /// <summary>[global gradient norm before clipping, clip scale] of the last <see cref="Step"/>, on the device.</summary>
    public ArrayView<float> NormAndScale => normAndScale.View;

    /// <summary>Returns every buffer to the pool.</summary>
    public void Dispose()
    {
        segments.Dispose();
        firstMoment.Dispose();
        secondMoment.Dispose();
        ema?.Dispose();
        segmentSums.Dispose();
        tensorSums.Dispose();
        normAndScale.Dispose();
    }
}
