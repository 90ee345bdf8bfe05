using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Elementwise;

namespace IlgpuDdpm.Autodiff;

/// <summary>
/// Reverse-mode automatic differentiation: each differentiable op runs its forward kernel, creates its
/// output with <see cref="NewTensor"/> and, when any input needs a gradient, records a closure that
/// runs its backward kernels. <see cref="Backward"/> seeds d(loss)/d(loss) = 1 and replays the closures
/// newest first. Convention: backward kernels ADD into gradient buffers, which <see cref="GradOf"/>
/// hands out zeroed on first use — so a tensor that feeds two ops gets the sum of both contributions.
/// Every tensor created through the tape (and every gradient of one) goes back to the pool on
/// <see cref="Clear"/>, which <see cref="Backward"/> calls when it is done.
/// </summary>
public sealed class Tape
{
    private readonly List<Action> backwardSteps = new();
    private readonly List<Tensor> owned = new();
    private readonly HashSet<Tensor> ownedSet = new(ReferenceEqualityComparer.Instance);
    private int noGradDepth;

    /// <summary>A tape on <paramref name="device"/>.</summary>
    public Tape(ComputeDevice device) => Device = device;

    /// <summary>The device every op of this tape runs on.</summary>
    public ComputeDevice Device { get; }

    /// <summary>False inside a <see cref="NoGrad"/> scope: ops then record nothing.</summary>
    public bool IsRecording => noGradDepth == 0;

    /// <summary>Whether the model is in training mode (dropout active). Set by the caller.</summary>
    public bool Training { get; set; }

    /// <summary>Number of backward steps recorded since the last <see cref="Clear"/>.</summary>
    public int RecordedSteps => backwardSteps.Count;

    /// <summary>Number of tensors the tape owns (returned to the pool on <see cref="Clear"/>).</summary>
    public int OwnedTensors => owned.Count;

    /// <summary>Within the returned scope no op is recorded (sampling, evaluation).</summary>
    public IDisposable NoGrad()
    {
        noGradDepth++;
        return new Scope(() => noGradDepth--);
    }

    /// <summary>A pooled intermediate of <paramref name="shape"/>, contents undefined, owned by the tape.</summary>
    public Tensor NewTensor(params int[] shape)
    {
        var t = Tensor.Create(Device, shape);
        Own(t);
        return t;
    }

    /// <summary>A zeroed pooled intermediate owned by the tape.</summary>
    public Tensor NewZeros(params int[] shape)
    {
        var t = NewTensor(shape);
        t.Clear();
        return t;
    }

    /// <summary>True when recording and any of <paramref name="inputs"/> needs a gradient.</summary>
    public bool NeedsGrad(Tensor? a, Tensor? b = null, Tensor? c = null) =>
        IsRecording && ((a?.RequiresGrad ?? false) || (b?.RequiresGrad ?? false) || (c?.RequiresGrad ?? false));

    /// <summary>True when recording and any of <paramref name="inputs"/> needs a gradient.</summary>
    public bool NeedsGrad(IReadOnlyList<Tensor> inputs)
    {
        if (!IsRecording) return false;
        foreach (var t in inputs) if (t.RequiresGrad) return true;
        return false;
    }

    /// <summary>
    /// Records the backward step of an op whose result is <paramref name="output"/>: marks the output as
    /// needing a gradient and queues <paramref name="backward"/>, which runs only if the output received one.
    /// </summary>
    public void Record(Tensor output, Action<Tensor> backward)
    {
        output.RequiresGrad = true;
        backwardSteps.Add(() =>
        {
            if (output.Grad is { } dy) backward(dy);
        });
    }

    /// <summary>The gradient buffer of <paramref name="t"/>, created zeroed (and owned by the tape) on first use.</summary>
    public Tensor GradOf(Tensor t)
    {
        if (t.Grad is null)
        {
            var g = Tensor.Zeros(Device, t.Shape);
            Own(g);
            t.Grad = g;
        }
        return t.Grad;
    }

    /// <summary>
    /// Adds <paramref name="gradient"/> into <paramref name="t"/>'s gradient — or, when t has none yet and the tape owns t,
    /// makes it t's gradient: no launch and no clear (issue 9; a residual's addend, whose gradient is dy). Only for a
    /// gradient that nothing reads or writes afterwards except through t: the upstream dy of the step being run, once.
    /// </summary>
    public void AddGrad(Tensor t, Tensor gradient)
    {
        if (t.Grad is null && ownedSet.Contains(t) && gradient.Shape.AsSpan().SequenceEqual(t.Shape))
        {
            t.Grad = gradient; // both are the tape's: Clear forgets t's Grad and releases the gradient once, as its own
            return;
        }
        Device.Kernels<ElementwiseKernels>().AddInto(GradOf(t).View, gradient.View);
    }

    private void Own(Tensor t)
    {
        owned.Add(t);
        ownedSet.Add(t);
    }

    /// <summary>
    /// <paramref name="x"/> under another shape of the same length, sharing its memory. Its gradient is
    /// a view of x's gradient, so backward kernels writing into it add straight into x's — no copy either way.
    /// </summary>
    public Tensor Reshape(Tensor x, params int[] shape)
    {
        var y = x.Reshape(shape);
        Own(y); // a reshape's Dispose leaves the shared buffer alone; Clear only forgets its Grad view
        if (NeedsGrad(x))
        {
            y.RequiresGrad = true;
            y.Grad = GradOf(x).Reshape(shape);
        }
        return y;
    }

    /// <summary>
    /// Backpropagates from the scalar <paramref name="loss"/> (d loss / d loss = 1), adding into every
    /// parameter's gradient, then <see cref="Clear"/>s the tape.
    /// </summary>
    public void Backward(Tensor loss)
    {
        if (loss.Length != 1) throw new ArgumentException($"backward needs a scalar loss, got {Tensor.ShapeText(loss.Shape)}");
        if (!loss.RequiresGrad) throw new InvalidOperationException("the loss does not depend on anything that requires a gradient");
        var seed = GradOf(loss);
        // A fill kernel, not an upload: an upload waits for the device, and a train step should not (issue 9).
        Device.Kernels<ElementwiseKernels>().Fill(seed.View, 1f);
        for (int i = backwardSteps.Count - 1; i >= 0; i--) backwardSteps[i]();
        Clear();
    }

    /// <summary>
    /// Backpropagates a vector–Jacobian product: seeds the gradient of <paramref name="output"/> with
    /// <paramref name="upstream"/> (same length) instead of 1, runs every recorded step, then
    /// <see cref="Clear"/>s the tape. Gradient checks use it to test an op without a loss on top.
    /// </summary>
    public void Backward(Tensor output, ReadOnlySpan<float> upstream)
    {
        if (!output.RequiresGrad) throw new InvalidOperationException("the output does not depend on anything that requires a gradient");
        GradOf(output).CopyFrom(upstream);
        for (int i = backwardSteps.Count - 1; i >= 0; i--) backwardSteps[i]();
        Clear();
    }

    /// <summary>Forgets the recorded steps and returns every owned tensor to the pool.</summary>
    public void Clear()
    {
        backwardSteps.Clear();
        foreach (var t in owned)
        {
            // A tape-owned tensor's Grad (if any) is also tape-owned and released on its own.
            t.Grad = null;
            t.Dispose();
        }
        owned.Clear();
        ownedSet.Clear();
    }

    private sealed class Scope(Action onDispose) : IDisposable
    {
        private bool done;
        public void Dispose()
        {
            if (done) return;
            done = true;
            onDispose();
        }
    }
}
