using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Matmul;
using IlgpuDdpm.Kernels.Reduce;

namespace IlgpuDdpm.Kernels.Conv;

/// <summary>
/// The shape of one 2-D convolution, NCHW: input x [N, Cin, H, W], weight [Cout, Cin, K, K], optional
/// bias [Cout], output y [N, Cout, Ho, Wo] with Ho = (H + 2·Padding − K) / Stride + 1 (same for Wo).
/// Zero padding on all four sides. The constructor validates everything and throws one-line
/// <see cref="ArgumentException"/>s. Two shapes are equal when all their dimensions are.
/// </summary>
public readonly record struct ConvShape
{
    /// <summary>
    /// A convolution of <paramref name="n"/> images of <paramref name="inChannels"/> × <paramref name="height"/> ×
    /// <paramref name="width"/> with <paramref name="outChannels"/> filters of <paramref name="kernelSize"/>²
    /// (odd); <paramref name="padding"/> −1 means <c>kernelSize / 2</c> ("same" size at stride 1).
    /// </summary>
    public ConvShape(int n, int inChannels, int height, int width, int outChannels, int kernelSize, int stride = 1, int padding = -1)
    {
        if (n <= 0 || inChannels <= 0 || height <= 0 || width <= 0 || outChannels <= 0)
            throw new ArgumentException($"conv dimensions must be positive, got N={n} Cin={inChannels} H={height} W={width} Cout={outChannels}");
        if (kernelSize <= 0 || kernelSize % 2 == 0)
            throw new ArgumentException($"conv kernel size must be odd and positive, got {kernelSize}");
        if (stride <= 0)
            throw new ArgumentException($"conv stride must be positive, got {stride}");
        if (padding == -1) padding = kernelSize / 2;
        if (padding < 0)
            throw new ArgumentException($"conv padding must be -1 (kernel size / 2) or non-negative, got {padding}");
        if (height + 2 * padding < kernelSize || width + 2 * padding < kernelSize)
            throw new ArgumentException($"conv kernel {kernelSize}x{kernelSize} does not fit the padded input {height + 2 * padding}x{width + 2 * padding}");
        N = n; Cin = inChannels; H = height; W = width; Cout = outChannels; K = kernelSize; Stride = stride; Padding = padding;
        Ho = (height + 2 * padding - kernelSize) / stride + 1;
        Wo = (width + 2 * padding - kernelSize) / stride + 1;
        if (LargestBuffer(n, inChannels, height, width, outChannels, kernelSize, stride, padding, Ho, Wo) > int.MaxValue)
            throw new ArgumentException($"conv {this} is too large for 32-bit indices");
    }

    /// <summary>
    /// The most elements any buffer or index of the kernels reaches (inputs, outputs, and the padded copies
    /// the blocked kernels make), so that 32-bit indices are safe.
    /// </summary>
    private static long LargestBuffer(long n, long cin, long h, long w, long cout, long k, long s, long p, long ho, long wo)
    {
        long cin4 = (cin + 3) / 4 * 4, cout4 = (cout + 3) / 4 * 4;
        long packedX = n * cin4 * ((ho - 1) * s + k + 1) * (((wo + 3) / 4 * 4 + 4) * s + k + 8);
        long packedDy = n * cout4 * (h + k) * ((w + 3) / 4 * 4 + k + 8);
        long weights = cout4 * cin4 * k * k;
        return Math.Max(Math.Max(packedX, packedDy), Math.Max(weights, Math.Max(n * cin * h * w, n * cout * ho * wo)));
    }

    /// <summary>Images in the batch.</summary>
    public int N { get; }
    /// <summary>Input channels.</summary>
    public int Cin { get; }
    /// <summary>Input height.</summary>
    public int H { get; }
    /// <summary>Input width.</summary>
    public int W { get; }
    /// <summary>Output channels (filters).</summary>
    public int Cout { get; }
    /// <summary>Kernel size (odd); the kernel is K × K.</summary>
    public int K { get; }
    /// <summary>Stride in both directions.</summary>
    public int Stride { get; }
    /// <summary>Zero padding on every side.</summary>
    public int Padding { get; }
    /// <summary>Output height, (H + 2·Padding − K) / Stride + 1.</summary>
    public int Ho { get; }
    /// <summary>Output width, (W + 2·Padding − K) / Stride + 1.</summary>
    public int Wo { get; }

    /// <summary>Elements of x: N·Cin·H·W.</summary>
    public int InputLength => N * Cin * H * W;
    /// <summary>Elements of the weight: Cout·Cin·K·K.</summary>
    public int WeightLength => Cout * Cin * K * K;
    /// <summary>Elements of y: N·Cout·Ho·Wo.</summary>
    public int OutputLength => N * Cout * Ho * Wo;
    /// <summary>Floating-point operations of the forward pass (a multiply-add counts 2): 2·N·Cout·Ho·Wo·Cin·K².</summary>
    public long Flops => 2L * N * Cout * Ho * Wo * Cin * K * K;

    /// <summary>"[2, 3, 7, 7] * [5, 3, 3, 3] stride 1 pad 1 -> [2, 5, 7, 7]".</summary>
    public override string ToString() => $"[{N}, {Cin}, {H}, {W}] * [{Cout}, {Cin}, {K}, {K}] stride {Stride} pad {Padding} -> [{N}, {Cout}, {Ho}, {Wo}]";
}

/// <summary>
/// What the convolution's epilogue adds to y after the bias (a fused add, one launch fewer forward and one fewer
/// backward): nothing, a tensor of y's shape (a residual connection), or a vector [N, Cout] broadcast over each output
/// plane (the time embedding of a ResBlock). y = (Σ + b) + addend, the bits of the conv followed by the add.
/// </summary>
public enum ConvAddend
{
    /// <summary>y = Σ + b.</summary>
    None,

    /// <summary>y[n, co, p] = Σ + b[co] + addend[n, co, p]: addend [N, Cout, Ho, Wo].</summary>
    SameShape,

    /// <summary>y[n, co, p] = Σ + b[co] + addend[n, co]: addend [N, Cout].</summary>
    PerChannel,
}

/// <summary>
/// 2-D convolution (NCHW, weight [Cout, Cin, K, K], zero padding, any stride, optional bias) and its three
/// gradients, as implicit GEMMs on the GEMM core (<see cref="GemmCore"/>): the forward is
/// y[co, p] = Σ_r w[co, r]·X[r, p] with r = (ci, ky, kx) and p = (n, oy, ox), X the never-materialised
/// im2col matrix (<see cref="Im2col"/>); the backward-input pass is the same product with the weight
/// transposed, split into Stride² phases so that it never multiplies the zeros a dilated dy would hold;
/// the weight gradient is dy·Xᵀ. GPUs run the core's tiled kernel for every pass (the weight gradient
/// splits its long reduction over the grid and sums the partial products in a fixed order); the CPU
/// accelerator runs the packed register-blocked kernels of ConvKernels.Cpu.cs where they exist and the
/// core's blocked kernel elsewhere.
/// Backward kernels ADD into their outputs (dx += …, dw += …, db += …). No atomics: every output element is
/// summed by one thread in a fixed order, so results are bit-for-bit repeatable. See docs/kernels.md (Conv).
/// </summary>
public sealed partial class ConvKernels(ComputeDevice device) : IKernelFamily<ConvKernels>
{
    /// <summary>
    /// Self-check probes: the U-Net's 3×3 "same", 3×3 stride 2 and 1×1 convolutions, at sizes that are and are not
    /// multiples of 4 and of the GPU tiles. Tolerance: sums over Cin·K² in another order, FMA contraction.
    /// </summary>
    public static KernelProbes Probes { get; } = new("Conv", 1e-4, [.. new[]
    {
        new ConvShape(2, 16, 8, 8, 16, 3), new ConvShape(2, 3, 9, 7, 5, 3), new ConvShape(2, 32, 14, 14, 32, 3, stride: 2),
        new ConvShape(1, 48, 7, 7, 32, 1), new ConvShape(2, 64, 16, 16, 64, 3),
    }.Select(s => new KernelProbe($"Conv forward+backward {s}", k =>
    {
        var conv = k.Kernels<ConvKernels>();
        var (x, w, dy) = (k.In(s.InputLength), k.In(s.WeightLength, -0.3f, 0.3f), k.In(s.OutputLength));
        conv.Forward(x.View, w.View, k.In(s.Cout, -0.5f, 0.5f).View, k.Out(s.OutputLength).View, s);
        conv.Forward(x.View, w.View, k.In(s.Cout).View, k.Out(s.OutputLength).View, s, k.In(s.OutputLength).View, ConvAddend.SameShape);
        conv.Forward(x.View, w.View, default, k.Out(s.OutputLength).View, s, k.In(s.N * s.Cout).View, ConvAddend.PerChannel);
        conv.BackwardInput(dy.View, w.View, k.Acc(s.InputLength).View, s); // backward kernels add into their outputs
        conv.BackwardWeight(x.View, dy.View, k.Acc(s.WeightLength).View, s);
        conv.BackwardBias(dy.View, k.Acc(s.Cout).View, s);
    }))]);

    /// <inheritdoc/>
    public static ConvKernels Create(ComputeDevice device) => new(device);

    // =====================================================================================================
    // Public launch methods
    // =====================================================================================================

    /// <summary>db[co] += Σ_{n,oy,ox} dy[n,co,oy,ox]. dy [N,Cout,Ho,Wo] → ADDS into db [Cout] (the deterministic reduction).</summary>
    public void BackwardBias(ArrayView<float> dy, ArrayView<float> db, ConvShape s)
    {
        Require(dy, s.OutputLength, "dy", "N·Cout·Ho·Wo", s);
        Require(db, s.Cout, "bias gradient", "Cout", s);
        // Per (n, co) over the contiguous plane, then over n: two row reductions, no index division per element.
        var reduce = device.Kernels<ReduceKernels>();
        using var perImage = device.Pool.Rent<float>(s.N * s.Cout);
        reduce.Rows(new ValueTerm(dy), new StoreSink(perImage.View, 0, 1f), s.N * s.Cout, s.Ho * s.Wo);
        reduce.Rows(new ColumnTerm(perImage.View, s.N, s.Cout), new AddSink(db), s.Cout, s.N);
    }

    /// <summary>
    /// y[n,co,oy,ox] = b[co] + Σ_{ci,ky,kx} w[co,ci,ky,kx]·x[n,ci,oy·s+ky−p, ox·s+kx−p] (x is 0 outside).
    /// x [N,Cin,H,W], w [Cout,Cin,K,K], bias [Cout] or an empty view for none → y [N,Cout,Ho,Wo] (overwritten).
    /// <paramref name="variant"/> picks the implementation (tests run both).
    /// </summary>
    public void Forward(ArrayView<float> x, ArrayView<float> w, ArrayView<float> bias, ArrayView<float> y, ConvShape s, GemmVariant variant = GemmVariant.Auto) =>
        Forward(x, w, bias, y, s, default, ConvAddend.None, variant);

    /// <summary>
    /// <see cref="Forward(ArrayView{float}, ArrayView{float}, ArrayView{float}, ArrayView{float}, ConvShape, GemmVariant)"/> with
    /// <paramref name="addend"/> added in the epilogue as <paramref name="kind"/> says: y = (Σ + b) + addend, where addend is
    /// [N, Cout, Ho, Wo] (<see cref="ConvAddend.SameShape"/>) or [N, Cout] (<see cref="ConvAddend.PerChannel"/>).
    /// </summary>
    public void Forward(ArrayView<float> x, ArrayView<float> w, ArrayView<float> bias, ArrayView<float> y, ConvShape s,
                        ArrayView<float> addend, ConvAddend kind, GemmVariant variant = GemmVariant.Auto)
    {
        Require(x, s.InputLength, "x", "N·Cin·H·W", s);
        Require(w, s.WeightLength, "weight", "Cout·Cin·K·K", s);
        Require(y, s.OutputLength, "y", "N·Cout·Ho·Wo", s);
        if (bias.Length != 0 && bias.Length != s.Cout)
            throw new ArgumentException($"conv bias: expected Cout = {s.Cout} values or an empty view, got {bias.Length} ({s})");
        int hasBias = bias.Length != 0 ? 1 : 0;
        if (hasBias == 0) bias = w; // never read; keeps every kernel argument a valid view
        var add = Addend.Of(addend, kind, s);
        if (add.Kind == 0) add.View = w; // never read, as the bias

        bool tiled = Resolve(variant) == GemmVariant.Tiled;
        if (!tiled && HasBlockedForward(s))
        {
            ForwardBlocked(x, w, bias, hasBias, add, y, s);
            return;
        }
        int plane = s.H * s.W;
        if (IsPointwise(s)) // y[n] = w·x[n] + b: one product per image, no im2col
        {
            var pointwise = new ImageStore { Y = y, Bias = bias, HasBias = hasBias, Add = add, C = s.Cout, H = s.H, W = s.W, GridH = s.H, GridW = s.W, Step = 1 };
            GemmCore.Run(device, Strided.A(w, s.Cout, s.Cin, false, 0), Strided.B(x, s.Cin, plane, false, s.Cin * plane), pointwise, s.N, s.Cout, plane, s.Cin, tiled);
            return;
        }
        int reduction = s.Cin * s.K * s.K;
        var image = Im2col.Of(x, s.N, s.Cin, s.H, s.W, s.K, s.K, s.Ho, s.Wo, s.Stride, 1, -s.Padding, -s.Padding);
        var store = new ImageStore { Y = y, Bias = bias, HasBias = hasBias, Add = add, C = s.Cout, H = s.Ho, W = s.Wo, GridH = s.Ho, GridW = s.Wo, Step = 1 };
        GemmCore.Run(device, Strided.A(w, s.Cout, reduction, false, 0), image, store, 1, s.Cout, s.N * s.Ho * s.Wo, reduction, tiled);
    }

    /// <summary>
    /// dx[n,ci,iy,ix] += Σ_{co,ky,kx} w[co,ci,ky,kx]·dy[n,co,oy,ox] over oy·s = iy+p−ky, ox·s = ix+p−kx
    /// (the transposed convolution). dy [N,Cout,Ho,Wo], w [Cout,Cin,K,K] → ADDS into dx [N,Cin,H,W].
    /// </summary>
    public void BackwardInput(ArrayView<float> dy, ArrayView<float> w, ArrayView<float> dx, ConvShape s, GemmVariant variant = GemmVariant.Auto)
    {
        RequireInputGradient(dy, w, dx, s);
        bool tiled = Resolve(variant) == GemmVariant.Tiled;
        if (!tiled && !IsPointwise(s) && BackwardInputBlocked(dy, w, dx, s)) return;
        BackwardInputGemms(dy, w, dx, s, tiled, default(WeightGemm<MatrixStore>), paired: false);
    }

    /// <summary>
    /// The input gradient's products on the GEMM core; with <paramref name="paired"/> (tiled only) the first of them shares
    /// its launch with <paramref name="companion"/>, the weight gradient's product (<see cref="GemmCore.RunPair"/>).
    /// </summary>
    private void BackwardInputGemms<TE>(ArrayView<float> dy, ArrayView<float> w, ArrayView<float> dx, ConvShape s, bool tiled, WeightGemm<TE> companion, bool paired)
        where TE : struct, IGemmEpilogue
    {
        int plane = s.H * s.W;
        if (IsPointwise(s)) // dx[n] += wᵀ·dy[n]
        {
            var pointwise = new ImageStore { Y = dx, Bias = dx, Accumulate = 1, C = s.Cin, H = s.H, W = s.W, GridH = s.H, GridW = s.W, Step = 1 };
            Gemm(Strided.A(w, s.Cin, s.Cout, true, 0), Strided.B(dy, s.Cout, plane, false, s.Cout * plane), pointwise, s.N, s.Cin, plane, s.Cout);
        }
        else
        {
            // Phase (py, px) of dx — the pixels iy = py + s·a, ix = px + s·b — receives only the taps
            // ky ≡ py + p (mod s), kx ≡ px + p (mod s), from dy[n, co, qy + a − ty, qx + b − tx] where
            // ky = ry + s·ty, ry = (py + p) mod s, qy = (py + p − ry)/s (same for x): one GEMM per phase with
            // reduction Cout·(taps of the phase), none of the zeros a stride-dilated dy would insert.
            for (int py = 0; py < s.Stride; py++)
            {
                var (ry, qy, tapsY, rows) = Phase(py, s.Padding, s.Stride, s.K, s.H);
                for (int px = 0; px < s.Stride; px++)
                {
                    var (rx, qx, tapsX, cols) = Phase(px, s.Padding, s.Stride, s.K, s.W);
                    if (tapsY == 0 || tapsX == 0 || rows == 0 || cols == 0) continue; // nothing reaches this phase
                    var weights = new PhaseWeights { W = w, Cin = s.Cin, K = s.K, TapsY = tapsY, TapsX = tapsX, Step = s.Stride, OffY = ry, OffX = rx };
                    var gradient = Im2col.Of(dy, s.N, s.Cout, s.Ho, s.Wo, tapsY, tapsX, rows, cols, 1, -1, qy, qx);
                    var store = new ImageStore { Y = dx, Bias = dx, Accumulate = 1, C = s.Cin, H = s.H, W = s.W, GridH = rows, GridW = cols, Step = s.Stride, OffY = py, OffX = px };
                    Gemm(weights, gradient, store, 1, s.Cin, s.N * rows * cols, s.Cout * tapsY * tapsX);
                }
            }
        }
        if (paired) companion.Run(device, s.Cout, tiled); // no phase took it (not reached by the U-Net's shapes)

        void Gemm<TA, TB, TS>(TA a, TB b, TS e, int batch, int m, int n, int k) where TA : struct, IGemmOperand where TB : struct, IGemmOperand where TS : struct, IGemmEpilogue
        {
            if (!paired) GemmCore.Run(device, a, b, e, batch, m, n, k, tiled);
            else GemmCore.RunPair(device, a, b, e, batch, m, n, k, companion.Gradient, companion.Image, companion.Store, companion.Splits, s.Cout, companion.Columns, companion.Length);
            paired = false;
        }
    }

    /// <summary>
    /// All of a convolution's gradients that are wanted (an empty view for one that is not): dx as <see cref="BackwardInput"/>,
    /// dw and db as <see cref="BackwardWeightAndBias"/>. With the tiled kernel (a GPU's) the input gradient's first product
    /// and the weight gradient's product run as one launch (<see cref="GemmCore.RunPair"/>): both read dy, and a
    /// convolution's backward is then 1 launch at stride 1 (the split sums finish inside it: SplitSumStore) instead of 3.
    /// </summary>
    public void Backward(ArrayView<float> x, ArrayView<float> w, ArrayView<float> dy, ArrayView<float> dx, ArrayView<float> dw, ArrayView<float> db, ConvShape s,
                         GemmVariant variant = GemmVariant.Auto, int splits = 0)
    {
        if (Resolve(variant) != GemmVariant.Tiled || dx.Length == 0 || dw.Length == 0)
        {
            if (dx.Length != 0) BackwardInput(dy, w, dx, s, variant);
            if (dw.Length != 0) BackwardWeightAndBias(x, dy, dw, db, s, variant, splits);
            else if (db.Length != 0) BackwardBias(dy, db, s);
            return;
        }
        RequireInputGradient(dy, w, dx, s);
        RequireWeightGradient(x, dy, dw, db, s);
        var plan = PlanWeightGemm(x, dy, dw, db, s, tiled: true, splits);
        if (plan.Splits == 1)
        {
            BackwardInputGemms(dy, w, dx, s, tiled: true, plan, paired: true);
            return;
        }
        using var partial = device.Pool.Rent<float>(plan.Splits * s.Cout * plan.Columns);
        BackwardInputGemms(dy, w, dx, s, tiled: true, IntoSplitSums(plan, partial.View, s.Cout), paired: true);
    }

    /// <summary>For phase <paramref name="phase"/> of one axis: first tap, dy offset, taps, and pixels of the phase.</summary>
    private static (int First, int Offset, int Taps, int Pixels) Phase(int phase, int padding, int stride, int k, int size)
    {
        int first = (phase + padding) % stride;
        int taps = first < k ? (k - first + stride - 1) / stride : 0;
        int pixels = phase < size ? (size - phase + stride - 1) / stride : 0;
        return (first, (phase + padding - first) / stride, taps, pixels);
    }

    /// <summary>
    /// dw[co,ci,ky,kx] += Σ_{n,oy,ox} dy[n,co,oy,ox]·x[n,ci,oy·s+ky−p, ox·s+kx−p].
    /// x [N,Cin,H,W], dy [N,Cout,Ho,Wo] → ADDS into dw [Cout,Cin,K,K]. <paramref name="splits"/> &gt; 0 forces the
    /// tiled kernel's reduction split (tests).
    /// </summary>
    public void BackwardWeight(ArrayView<float> x, ArrayView<float> dy, ArrayView<float> dw, ConvShape s, GemmVariant variant = GemmVariant.Auto, int splits = 0) =>
        BackwardWeightAndBias(x, dy, dw, default, s, variant, splits);

    /// <summary>
    /// <see cref="BackwardWeight"/> and, when <paramref name="db"/> is not empty, <see cref="BackwardBias"/> (db [Cout] +=
    /// Σ dy). On the GEMM core's general path (every pass of a GPU) the bias gradient is one more column of the
    /// weight-gradient product — Xᵀ gets a column of ones — so it takes no launch of its own (issue 9).
    /// </summary>
    public void BackwardWeightAndBias(ArrayView<float> x, ArrayView<float> dy, ArrayView<float> dw, ArrayView<float> db, ConvShape s,
                                      GemmVariant variant = GemmVariant.Auto, int splits = 0)
    {
        RequireWeightGradient(x, dy, dw, db, s);
        bool withBias = db.Length != 0;

        bool tiled = Resolve(variant) == GemmVariant.Tiled;
        if (!tiled && IsPointwise(s)) // dw += DY [Cout, N·H·W] · Xᵀ, both read channel-major (GPUs split the long sum below)
        {
            int all = s.N * s.H * s.W;
            var dyc = new ChannelMajor { View = dy, C = s.Cout, Plane = s.H * s.W, SplitLength = all, Pixels = all };
            var xc = new ChannelMajor { View = x, C = s.Cin, Plane = s.H * s.W, SplitLength = all, Pixels = all, Transposed = 1 };
            GemmCore.Run(device, dyc, xc, new MatrixStore { C = dw, Bias = dw, M = s.Cout, N = s.Cin, Alpha = 1f, Accumulate = 1 }, 1, s.Cout, s.Cin, all, tiled);
            if (withBias) BackwardBias(dy, db, s);
            return;
        }
        if (!tiled && Is3x3(s))
        {
            BackwardWeightBlocked(x, dy, dw, s);
            if (withBias) BackwardBias(dy, db, s);
            return;
        }

        var plan = PlanWeightGemm(x, dy, dw, db, s, tiled, splits);
        if (plan.Splits == 1)
        {
            plan.Run(device, s.Cout, tiled);
            return;
        }
        using var partial = device.Pool.Rent<float>(plan.Splits * s.Cout * plan.Columns);
        IntoSplitSums(plan, partial.View, s.Cout).Run(device, s.Cout, tiled);
    }

    /// <summary>
    /// [dw | db] [Cout, R (+1)] += DY [Cout, P] · [Xᵀ | 1] [P, R (+1)], P = N·Ho·Wo pixels, R = Cin·K·K, planned: on a GPU the
    /// pixels are split over the grid into partial products, summed in split order into dw and db (<see cref="IntoSplitSums"/>).
    /// </summary>
    private WeightGemm<WeightBiasStore> PlanWeightGemm(ArrayView<float> x, ArrayView<float> dy, ArrayView<float> dw, ArrayView<float> db, ConvShape s, bool tiled, int splits)
    {
        bool withBias = db.Length != 0;
        int columns = s.Cin * s.K * s.K + (withBias ? 1 : 0), pixels = s.N * s.Ho * s.Wo;
        int slices = (pixels + GemmCore.TileK - 1) / GemmCore.TileK;
        if (!tiled) splits = 1;
        else if (splits <= 0)
        {
            // Enough groups to fill the device, each still summing at least 4 slices (64 pixels).
            int tiles = ((columns + GemmCore.Tile - 1) / GemmCore.Tile) * ((s.Cout + GemmCore.Tile - 1) / GemmCore.Tile);
            int wanted = (2 * device.Multiprocessors + tiles - 1) / tiles;
            splits = Math.Clamp(wanted, 1, Math.Max(1, slices / 4));
        }
        splits = Math.Min(splits, slices);
        int length = (slices + splits - 1) / splits * GemmCore.TileK;
        splits = (pixels + length - 1) / length; // no empty split
        if (splits == 1) length = pixels;

        var gradient = new ChannelMajor { View = dy, C = s.Cout, Plane = s.Ho * s.Wo, SplitLength = length, Pixels = pixels };
        var image = Im2col.Of(x, s.N, s.Cin, s.H, s.W, s.K, s.K, s.Ho, s.Wo, s.Stride, 1, -s.Padding, -s.Padding);
        image.Transposed = 1;
        image.SplitLength = length;
        var into = new WeightBiasStore { Dw = dw, Db = withBias ? db : dw, Weights = s.Cin * s.K * s.K, Columns = columns };
        return new WeightGemm<WeightBiasStore>(gradient, image, into, splits, columns, length);
    }

    /// <summary>The weight gradient's product as planned: operands, epilogue (dw and db, or the split partials), splits, columns, pixels per split.</summary>
    private readonly record struct WeightGemm<TE>(ChannelMajor Gradient, Im2col Image, TE Store, int Splits, int Columns, int Length) where TE : struct, IGemmEpilogue
    {
        public void Run(ComputeDevice device, int cout, bool tiled) => GemmCore.Run(device, Gradient, Image, Store, Splits, cout, Columns, Length, tiled);
    }

    /// <summary>
    /// <paramref name="plan"/> with its splits' partials [Splits, Cout, Columns] in <paramref name="partial"/>, summed in split
    /// order by the last group of each tile to finish (<see cref="SplitSumStore"/>): no launch of their own.
    /// </summary>
    private WeightGemm<SplitSumStore> IntoSplitSums(WeightGemm<WeightBiasStore> plan, ArrayView<float> partial, int cout)
    {
        int tilesX = (plan.Columns + GemmCore.Tile - 1) / GemmCore.Tile, tiles = tilesX * ((cout + GemmCore.Tile - 1) / GemmCore.Tile);
        if (tickets is null || tickets.Length < tiles)
        {
            tickets?.Dispose();
            tickets = device.Pool.Rent<int>(Math.Max(tiles, 1024));
            tickets.Clear(); // once: every launch leaves its tickets at 0
        }
        var store = new SplitSumStore { Partial = partial, Tickets = tickets.View, Into = plan.Store, Splits = plan.Splits, M = cout, Columns = plan.Columns, TilesX = tilesX };
        return new(plan.Gradient, plan.Image, store, plan.Splits, plan.Columns, plan.Length);
    }

    private DeviceBuffer<int>? tickets;

    /// <summary>The 1×1, stride-1, unpadded case: a plain product per image.</summary>
    private static bool IsPointwise(ConvShape s) => s.K == 1 && s.Stride == 1 && s.Padding == 0;

    private GemmVariant Resolve(GemmVariant variant) =>
        variant != GemmVariant.Auto ? variant : device.UsesGpuVariants ? GemmVariant.Tiled : GemmVariant.RegisterBlocked; // RegisterBlocked: ConvKernels.Cpu.cs where it has a kernel

    // The operands of the input gradient, and of the weight gradient (db: an empty view for none), checked.
    private static void RequireInputGradient(ArrayView<float> dy, ArrayView<float> w, ArrayView<float> dx, ConvShape s)
    {
        Require(dy, s.OutputLength, "dy", "N·Cout·Ho·Wo", s);
        Require(w, s.WeightLength, "weight", "Cout·Cin·K·K", s);
        Require(dx, s.InputLength, "dx", "N·Cin·H·W", s);
    }

    private static void RequireWeightGradient(ArrayView<float> x, ArrayView<float> dy, ArrayView<float> dw, ArrayView<float> db, ConvShape s)
    {
        Require(x, s.InputLength, "x", "N·Cin·H·W", s);
        Require(dy, s.OutputLength, "dy", "N·Cout·Ho·Wo", s);
        Require(dw, s.WeightLength, "weight gradient", "Cout·Cin·K·K", s);
        if (db.Length != 0) Require(db, s.Cout, "bias gradient", "Cout", s);
    }

    private static void Require(ArrayView<float> view, int expected, string what, string formula, ConvShape s)
    {
        if (view.Length != expected)
            throw new ArgumentException($"conv {what}: expected {formula} = {expected} values, got {view.Length} ({s})");
    }

    /// <summary>The GEMM-core kernel structs the convolution launches (compiled to PTX by the tests).</summary>
    internal static IEnumerable<Type> LaunchedKernels =>
        GemmCore.Kernels<Strided, Im2col, ImageStore>()
            .Concat(GemmCore.Kernels<PhaseWeights, Im2col, ImageStore>())
            .Concat(GemmCore.Kernels<ChannelMajor, Im2col, SplitSumStore>())
            .Concat(GemmCore.Kernels<ChannelMajor, Im2col, WeightBiasStore>())
            .Concat([GemmCore.PairKernel<Strided, Strided, ImageStore, ChannelMajor, Im2col, WeightBiasStore>(), GemmCore.PairKernel<Strided, Strided, ImageStore, ChannelMajor, Im2col, SplitSumStore>(),
                     GemmCore.PairKernel<PhaseWeights, Im2col, ImageStore, ChannelMajor, Im2col, WeightBiasStore>(), GemmCore.PairKernel<PhaseWeights, Im2col, ImageStore, ChannelMajor, Im2col, SplitSumStore>()])
            .Concat(GemmCore.Kernels<Strided, Strided, ImageStore>())
            .Concat(GemmCore.Kernels<ChannelMajor, ChannelMajor, MatrixStore>());

    // =====================================================================================================
    // GEMM operands and epilogue of the convolution
    // =====================================================================================================

    /// <summary>
    /// The im2col matrix of an NCHW image, never materialised: X[(c, ty, tx), (n, a, b)] =
    /// Src[n, c, OffY + a·PixelStep + ty·TapStep, OffX + b·PixelStep + tx·TapStep], 0 outside the image.
    /// Forward: PixelStep = stride, TapStep = 1, Off = −padding. Backward-input phase: dy with PixelStep 1,
    /// TapStep −1. Transposed (weight gradient): the pixels are the rows, product z covers pixels
    /// [z·SplitLength, (z+1)·SplitLength), 0 past the last, and a column past the last tap reads 1 (the bias gradient's).
    /// </summary>
    internal struct Im2col : IGemmOperand
    {
        public ArrayView<float> Src;
        public int C, H, W, TapsY, TapsX, GridH, GridW, PixelStep, TapStep, OffY, OffX;
        public int Transposed, SplitLength, Pixels;

        internal static Im2col Of(ArrayView<float> src, int n, int c, int h, int w, int tapsY, int tapsX, int gridH, int gridW,
                                  int pixelStep, int tapStep, int offY, int offX) =>
            new()
            {
                Src = src, C = c, H = h, W = w, TapsY = tapsY, TapsX = tapsX, GridH = gridH, GridW = gridW,
                PixelStep = pixelStep, TapStep = tapStep, OffY = offY, OffX = offX, Pixels = n * gridH * gridW,
            };

        /// <inheritdoc/>
        public readonly float Load(int batch, int row, int col)
        {
            int tap = Transposed != 0 ? col : row;
            int pixel = (Transposed != 0 ? row : col) + batch * SplitLength;
            if (pixel >= Pixels) return 0f;
            int taps = TapsY * TapsX, c = tap / taps, t = tap - c * taps, ty = t / TapsX, tx = t - ty * TapsX;
            if (c >= C) return 1f; // the column of ones past the last tap (transposed only): the bias gradient
            int plane = GridH * GridW, n = pixel / plane, rem = pixel - n * plane, a = rem / GridW, b = rem - a * GridW;
            int y = OffY + a * PixelStep + ty * TapStep, x = OffX + b * PixelStep + tx * TapStep;
            return y >= 0 && y < H && x >= 0 && x < W ? Src[((n * C + c) * H + y) * W + x] : 0f;
        }

        /// <inheritdoc/>
        public readonly bool ContiguousInK => Transposed != 0;
    }

    /// <summary>
    /// An NCHW tensor as a [C, pixels] matrix: M[c, (n, p)] = View[n, c, p] (Plane = pixels per image), or its
    /// transpose [pixels, C] when Transposed; product z covers pixels [z·SplitLength, (z+1)·SplitLength), 0 past the last.
    /// </summary>
    internal struct ChannelMajor : IGemmOperand
    {
        public ArrayView<float> View;
        public int C, Plane, SplitLength, Pixels, Transposed;

        /// <inheritdoc/>
        public readonly float Load(int batch, int row, int col)
        {
            int pixel = (Transposed != 0 ? row : col) + batch * SplitLength, channel = Transposed != 0 ? col : row;
            if (pixel >= Pixels) return 0f;
            int n = pixel / Plane;
            return View[(n * C + channel) * Plane + pixel - n * Plane];
        }

        /// <inheritdoc/>
        public readonly bool ContiguousInK => true;
    }

    /// <summary>
    /// The weight of one backward-input phase, transposed: A[ci, (co, ty, tx)] = W[co, ci, OffY + Step·ty, OffX + Step·tx].
    /// </summary>
    internal struct PhaseWeights : IGemmOperand
    {
        public ArrayView<float> W;
        public int Cin, K, TapsY, TapsX, Step, OffY, OffX;

        /// <inheritdoc/>
        public readonly float Load(int batch, int row, int col)
        {
            int taps = TapsY * TapsX, co = col / taps, t = col - co * taps, ty = t / TapsX, tx = t - ty * TapsX;
            return W[((co * Cin + row) * K + OffY + Step * ty) * K + OffX + Step * tx];
        }

        /// <inheritdoc/>
        public readonly bool ContiguousInK => false;
    }

    /// <summary>The epilogue's addend (<see cref="ConvAddend"/>): Kind 0 none, 1 y's shape, 2 [N, Cout]; View is never read for none.</summary>
    internal struct Addend
    {
        public ArrayView<float> View;
        public int Kind;

        internal static Addend Of(ArrayView<float> view, ConvAddend kind, ConvShape s)
        {
            int expected = kind switch { ConvAddend.None => 0, ConvAddend.SameShape => s.OutputLength, ConvAddend.PerChannel => s.N * s.Cout,
                                         _ => throw new ArgumentException($"conv addend: unknown kind {kind}") };
            if (view.Length != expected)
                throw new ArgumentException($"conv addend ({kind}): expected {expected} values, got {view.Length} ({s})");
            return new Addend { View = view, Kind = (int)kind };
        }

        /// <summary>v plus the addend of output element <paramref name="index"/> = (plane <paramref name="plane"/> = n·Cout + co, pixel).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly float To(float v, int plane, int index) => Kind == 0 ? v : v + View[Kind == 1 ? index : plane];
    }

    /// <summary>
    /// Scatters C [channels, (n, a, b)] of product `batch` into an NCHW image (image batch + n; one product per image for
    /// the 1×1 convolution, else batch 0): Y[n, i, OffY + Step·a, OffX + Step·b] = (sum + Bias[i]) + the addend
    /// (the bias when HasBias, the addend when there is one), or += sum (when Accumulate).
    /// </summary>
    internal struct ImageStore : IGemmEpilogue
    {
        public ArrayView<float> Y, Bias;
        public Addend Add;
        public int HasBias, Accumulate, C, H, W, GridH, GridW, Step, OffY, OffX;

        /// <inheritdoc/>
        public readonly void FinishTile(int i0, int j0, int tx, int ty, ArrayView<float> scratch) { }

        /// <inheritdoc/>
        public readonly void Store(int batch, int i, int j, float sum)
        {
            int plane = GridH * GridW, n = j / plane, rem = j - n * plane, a = rem / GridW, b = rem - a * GridW;
            int index = (((batch + n) * C + i) * H + OffY + Step * a) * W + OffX + Step * b;
            if (Accumulate != 0) Y[index] += sum;
            else Y[index] = Add.To(HasBias != 0 ? sum + Bias[i] : sum, (batch + n) * C + i, index);
        }
    }
}
