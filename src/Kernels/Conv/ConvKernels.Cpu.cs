using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;
using IlgpuDdpm.Kernels.Device;

namespace IlgpuDdpm.Kernels.Conv;

// The CPU accelerator's convolution kernels (GemmVariant.RegisterBlocked) for the shapes the U-Net runs: 3×3 at
// stride 1 and 2 and 1×1. The reduction input is first copied into a zero-padded buffer whose rows are
// whole Float4s and the weights into groups of 4 output channels; then each thread computes a register
// block with no bounds checks, loading each input once per block and adding whole hand-unrolled dot
// products into its sums. On ILGPU's CPU accelerator every view access costs a range check, a buffer
// check and a possible call, so four floats per access and many multiply-adds per load is what makes
// these faster than the GEMM core's element-wise im2col loads (bench/RESULTS.md, Conv rows). Every other
// shape, and the stride-2 backward-input pass, runs the GEMM core.
public sealed partial class ConvKernels
{
    /// <summary>Four floats loaded or stored with one view access (blocked kernels' packed operands).</summary>
    internal struct Float4(float x, float y, float z, float w)
    {
        public float X = x, Y = y, Z = z, W = w;

        /// <summary>a·b, summed X, Y, Z, W in that order.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float Dot(Float4 a, Float4 b) => a.X * b.X + a.Y * b.Y + a.Z * b.Z + a.W * b.W;
    }

    /// <summary>
    /// A zero-padded copy of an NCHW tensor: dst[n, c, r, q] = src[n, c, r − PadTop, q − PadLeft] where that lies
    /// inside, else 0; Cp ≥ C channels (the extra ones zero), Hp rows of Wp4 Float4s.
    /// </summary>
    internal struct Packing
    {
        public int C, H, W;
        public int Cp, Hp, Wp4;
        public int PadTop, PadLeft;
        public readonly int Rows(int n) => n * Cp * Hp;
        public readonly int Floats(int n) => n * Cp * Hp * Wp4 * 4;
    }

    /// <summary>Dimensions of a blocked launch (fields unused by a kernel are 0).</summary>
    internal struct Blocked
    {
        /// <summary>Images, reduction channels (as packed: a multiple of 4 for the 1×1 kernels).</summary>
        public int N, Cin;
        /// <summary>Packed input rows per channel and Float4s per row.</summary>
        public int Hp, Wp4;
        /// <summary>Output channels, blocks of 4 of them, channels of the packed dy (weight gradient).</summary>
        public int Cout, CoB, CoutP;
        /// <summary>Real input channels (weight gradient).</summary>
        public int Ci;
        /// <summary>Output rows and columns, pixel blocks per output row.</summary>
        public int Ho, Wo, XB;
        /// <summary>1: out += result (backward-input); 0: out = result + bias.</summary>
        public int Accumulate, HasBias;
    }


    /// <summary>Whether the blocked kernels cover <paramref name="s"/>'s forward pass (3×3 at stride 1 and 2, and 1×1).</summary>
    private static bool HasBlockedForward(ConvShape s) => IsPointwise(s) || Is3x3(s);

    /// <summary>Whether the blocked kernels cover <paramref name="s"/>'s weight gradient (3×3 at stride 1 and 2).</summary>
    private static bool Is3x3(ConvShape s) => s.K == 3 && s.Stride <= 2;

    private void ForwardBlocked(ArrayView<float> x, ArrayView<float> w, ArrayView<float> bias, int hasBias, Addend add, ArrayView<float> y, ConvShape s)
    {
        if (IsPointwise(s))
        {
            // A plain GEMM per image: pixels flattened, channels padded to a multiple of 4.
            int pixels = s.H * s.W;
            int xb = (pixels + 7) / 8;
            var pack = new Packing { C = s.Cin, H = 1, W = pixels, Cp = RoundUp4(s.Cin), Hp = 1, Wp4 = 2 * xb };
            var g = new Blocked { N = s.N, Cin = pack.Cp, Hp = 1, Wp4 = pack.Wp4, Cout = s.Cout, CoB = Blocks4(s.Cout), Ho = 1, Wo = pixels, XB = xb, HasBias = hasBias };
            using var xp = PackInput(x, s.N, pack);
            using var wp = PackWeights(w, s.Cout, s.Cin, 1, pack.Cp, transpose: false);
            device.Launch(s.N * g.CoB * xb, new Forward1x1BlockedKernel(View4(xp), View4(wp), bias, add, y, g));
            return;
        }
        int stride = s.Stride;
        var (hp, wp4, xbs) = Plan3x3(stride, s.Ho, s.Wo);
        var packing = new Packing { C = s.Cin, H = s.H, W = s.W, Cp = s.Cin, Hp = hp, Wp4 = wp4, PadTop = s.Padding, PadLeft = s.Padding };
        var geometry = new Blocked { N = s.N, Cin = s.Cin, Hp = hp, Wp4 = wp4, Cout = s.Cout, CoB = Blocks4(s.Cout), Ho = s.Ho, Wo = s.Wo, XB = xbs, HasBias = hasBias };
        using var xpacked = PackInput(x, s.N, packing);
        using var weights = PackWeights(w, s.Cout, s.Cin, 9, s.Cin, transpose: false);
        Launch3x3(stride, xpacked, weights, bias, add, y, geometry);
    }

    /// <summary>The 3×3 stride-1 backward-input pass; false when <paramref name="s"/> has no blocked kernel.</summary>
    private bool BackwardInputBlocked(ArrayView<float> dy, ArrayView<float> w, ArrayView<float> dx, ConvShape s)
    {
        if (s.K != 3 || s.Stride != 1) return false;
        // The transposed convolution at stride 1 is a convolution of dy padded by K−1−p with the weight
        // transposed (Cin ↔ Cout) and rotated by 180°.
        var (hp, wp4, xbs) = Plan3x3(1, s.H, s.W);
        var packing = new Packing { C = s.Cout, H = s.Ho, W = s.Wo, Cp = s.Cout, Hp = hp, Wp4 = wp4, PadTop = 2 - s.Padding, PadLeft = 2 - s.Padding };
        var geometry = new Blocked { N = s.N, Cin = s.Cout, Hp = hp, Wp4 = wp4, Cout = s.Cin, CoB = Blocks4(s.Cin), Ho = s.H, Wo = s.W, XB = xbs, Accumulate = 1 };
        using var dyp2 = PackInput(dy, s.N, packing);
        using var weights = PackWeights(w, s.Cout, s.Cin, 9, s.Cout, transpose: true);
        Launch3x3(1, dyp2, weights, dx, new Addend { View = dx }, dx, geometry);
        return true;
    }

    private void BackwardWeightBlocked(ArrayView<float> x, ArrayView<float> dy, ArrayView<float> dw, ConvShape s)
    {
        int coB = Blocks4(s.Cout);
        var (hp, wp4, xbs) = Plan3x3(s.Stride, s.Ho, s.Wo);
        var packing = new Packing { C = s.Cin, H = s.H, W = s.W, Cp = s.Cin, Hp = hp, Wp4 = wp4, PadTop = s.Padding, PadLeft = s.Padding };
        var dyPacking = new Packing { C = s.Cout, H = s.Ho, W = s.Wo, Cp = coB * 4, Hp = s.Ho, Wp4 = xbs };
        var geometry = new Blocked { N = s.N, Cin = s.Cin, Hp = hp, Wp4 = wp4, Cout = s.Cout, CoB = coB, CoutP = coB * 4, Ci = s.Cin, Ho = s.Ho, Wo = s.Wo, XB = xbs };
        using var packedX = PackInput(x, s.N, packing);
        using var packedDy = PackInput(dy, s.N, dyPacking);
        if (s.Stride == 1) device.Launch(coB * s.Cin, new WeightGrad3x3S1BlockedKernel(View4(packedX), View4(packedDy), dw, geometry));
        else device.Launch(coB * s.Cin, new WeightGrad3x3S2BlockedKernel(View4(packedX), View4(packedDy), dw, geometry));
    }

    /// <summary>The packed input rows and Float4s per row a 3×3 kernel reads for an ho × wo output, and its 4-pixel blocks per row.</summary>
    private static (int Hp, int Wp4, int XB) Plan3x3(int stride, int ho, int wo)
    {
        int xb = (wo + 3) / 4;
        int hp = (ho - 1) * stride + 3;
        return stride == 1 ? (hp, xb + 1, xb) : (hp, 2 * xb + 1, xb); // block xb reads Float4s xb, xb+1 (stride 2: 2xb..2xb+2)
    }

    private void Launch3x3(int stride, DeviceBuffer<float> input, DeviceBuffer<float> weights, ArrayView<float> bias, Addend add, ArrayView<float> output, Blocked g)
    {
        int threads = g.N * g.CoB * g.Ho * g.XB;
        if (stride == 1) device.Launch(threads, new Forward3x3S1BlockedKernel(View4(input), View4(weights), bias, add, output, g));
        else device.Launch(threads, new Forward3x3S2BlockedKernel(View4(input), View4(weights), bias, add, output, g));
    }

    /// <summary>A pooled zero-padded copy of <paramref name="source"/> laid out by <paramref name="p"/>.</summary>
    private DeviceBuffer<float> PackInput(ArrayView<float> source, int n, Packing p)
    {
        var buffer = device.Pool.Rent<float>(p.Floats(n));
        device.Launch(p.Rows(n), new PackInputKernel(source, View4(buffer), p));
        return buffer;
    }

    /// <summary>
    /// Pooled weights in groups of 4 output channels: [blocks][reduction channels (padded to <paramref name="reduction"/>)][K·K] Float4s.
    /// Transposed (backward-input): the groups run over Cin, the reduction over Cout, and the taps are rotated by 180°.
    /// </summary>
    private DeviceBuffer<float> PackWeights(ArrayView<float> w, int cout, int cin, int kk, int reduction, bool transpose)
    {
        int blocks = Blocks4(transpose ? cin : cout);
        int count = blocks * reduction * kk;
        var buffer = device.Pool.Rent<float>(count * 4);
        device.Launch(count, new PackWeightsKernel(w, View4(buffer), cout, cin, kk, reduction, transpose ? 1 : 0));
        return buffer;
    }

    private static ArrayView<Float4> View4(DeviceBuffer<float> buffer) => buffer.View.Cast<Float4>();
    private static int Blocks4(int n) => (n + 3) / 4;
    private static int RoundUp4(int n) => (n + 3) / 4 * 4;

    // =====================================================================================================
    // Packing (blocked variant)
    // =====================================================================================================

    // src [N,C,H,W] -> dst [N,Cp,Hp,Wp4·4]: dst[n,c,r,q] = src[n,c,r−PadTop,q−PadLeft] when c < C and that lies
    // inside the source, else 0. One thread per destination row.
    internal readonly struct PackInputKernel(ArrayView<float> source, ArrayView<Float4> destination, Packing packing) : IThreadKernel
    {
        public void Execute(int row)
        {
            var (src, dst, p) = (source, destination, packing); // locals: see Forward3x3S1BlockedKernel
            int r = row % p.Hp;
            int nc = row / p.Hp;
            int c = nc % p.Cp;
            int n = nc / p.Cp;
            int sy = r - p.PadTop;
            int dstRow = row * p.Wp4;
            Float4 zero = default;
            if (c >= p.C || sy < 0 || sy >= p.H)
            {
                for (int q = 0; q < p.Wp4; q++) dst[dstRow + q] = zero;
                return;
            }
            int srcRow = ((n * p.C + c) * p.H + sy) * p.W;
            for (int q = 0; q < p.Wp4; q++)
            {
                int sx = 4 * q - p.PadLeft;
                Float4 v;
                if (sx >= 0 && sx + 3 < p.W)
                {
                    v.X = src[srcRow + sx]; v.Y = src[srcRow + sx + 1]; v.Z = src[srcRow + sx + 2]; v.W = src[srcRow + sx + 3];
                }
                else
                {
                    v.X = sx >= 0 && sx < p.W ? src[srcRow + sx] : 0f;
                    v.Y = sx + 1 >= 0 && sx + 1 < p.W ? src[srcRow + sx + 1] : 0f;
                    v.Z = sx + 2 >= 0 && sx + 2 < p.W ? src[srcRow + sx + 2] : 0f;
                    v.W = sx + 3 >= 0 && sx + 3 < p.W ? src[srcRow + sx + 3] : 0f;
                }
                dst[dstRow + q] = v;
            }
        }
    }

    // w [Cout,Cin,K·K] -> dst [blocks][reduction][K·K] Float4:
    //   forward    dst[(b·reduction + ci)·KK + k] = (w[4b+i, ci, k])_{i<4}, zero for 4b+i ≥ Cout or ci ≥ Cin
    //   transposed dst[(b·reduction + co)·KK + k] = (w[co, 4b+i, KK−1−k])_{i<4}, zero for 4b+i ≥ Cin or co ≥ Cout
    internal readonly struct PackWeightsKernel(ArrayView<float> w, ArrayView<Float4> dst, int cout, int cin, int kk, int reduction, int transpose) : IThreadKernel
    {
        public void Execute(int i)
        {
            int k = i % kk;
            int rest = i / kk;
            int red = rest % reduction;
            int block = rest / reduction;
            Float4 v = default;
            if (transpose == 0)
            {
                if (red < cin)
                {
                    int co = 4 * block, stride = cin * kk, at = (co * cin + red) * kk + k;
                    if (co < cout) v.X = w[at];
                    if (co + 1 < cout) v.Y = w[at + stride];
                    if (co + 2 < cout) v.Z = w[at + 2 * stride];
                    if (co + 3 < cout) v.W = w[at + 3 * stride];
                }
            }
            else if (red < cout)
            {
                int ci = 4 * block, at = (red * cin + ci) * kk + (kk - 1 - k);
                if (ci < cin) v.X = w[at];
                if (ci + 1 < cin) v.Y = w[at + kk];
                if (ci + 2 < cin) v.Z = w[at + 2 * kk];
                if (ci + 3 < cin) v.W = w[at + 3 * kk];
            }
            dst[i] = v;
        }
    }

    // =====================================================================================================
    // Register blocks over packed rows
    // =====================================================================================================

    /// <summary>
    /// What one packed input row offers a block of 4 consecutive outputs of a 3×3 kernel: the 4-pixel
    /// windows under taps kx = 0, 1, 2.
    /// </summary>
    internal struct Row3
    {
        public Float4 K0, K1, K2;
    }

    /// <summary>
    /// The windows at stride 2 of the block whose first input is Float4 <paramref name="at"/> of a packed row: outputs
    /// 4b..4b+3 read inputs 8b..8b+8, Float4s 2b..2b+2 (9 of their 12 floats).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Row3 Stride2Windows(ArrayView<Float4> xp, int at)
    {
        Float4 p = xp[at], q = xp[at + 1], u = xp[at + 2];
        return new Row3 { K0 = new(p.X, p.Z, q.X, q.Z), K1 = new(p.Y, p.W, q.Y, q.W), K2 = new(p.Z, q.X, q.Z, u.X) };
    }

    /// <summary>Σ over the 9 taps of one output channel's weights k times the 4-pixel windows of rows r0..r2 (tap order).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Float4 Taps(Float4 sum, float k0, float k1, float k2, float k3, float k4, float k5, float k6, float k7, float k8, Row3 r0, Row3 r1, Row3 r2) =>
        new(sum.X + (k0 * r0.K0.X + k1 * r0.K1.X + k2 * r0.K2.X + k3 * r1.K0.X + k4 * r1.K1.X + k5 * r1.K2.X + k6 * r2.K0.X + k7 * r2.K1.X + k8 * r2.K2.X),
            sum.Y + (k0 * r0.K0.Y + k1 * r0.K1.Y + k2 * r0.K2.Y + k3 * r1.K0.Y + k4 * r1.K1.Y + k5 * r1.K2.Y + k6 * r2.K0.Y + k7 * r2.K1.Y + k8 * r2.K2.Y),
            sum.Z + (k0 * r0.K0.Z + k1 * r0.K1.Z + k2 * r0.K2.Z + k3 * r1.K0.Z + k4 * r1.K1.Z + k5 * r1.K2.Z + k6 * r2.K0.Z + k7 * r2.K1.Z + k8 * r2.K2.Z),
            sum.W + (k0 * r0.K0.W + k1 * r0.K1.W + k2 * r0.K2.W + k3 * r1.K0.W + k4 * r1.K1.W + k5 * r1.K2.W + k6 * r2.K0.W + k7 * r2.K1.W + k8 * r2.K2.W));

    /// <summary>sum + k0·p0 + k1·p1 + k2·p2 + k3·p3 lane by lane (4 reduction channels of a 1×1 kernel).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Float4 Channels4(Float4 sum, float k0, float k1, float k2, float k3, Float4 p0, Float4 p1, Float4 p2, Float4 p3) =>
        new(sum.X + (k0 * p0.X + k1 * p1.X + k2 * p2.X + k3 * p3.X), sum.Y + (k0 * p0.Y + k1 * p1.Y + k2 * p2.Y + k3 * p3.Y),
            sum.Z + (k0 * p0.Z + k1 * p1.Z + k2 * p2.Z + k3 * p3.Z), sum.W + (k0 * p0.W + k1 * p1.W + k2 * p2.W + k3 * p3.W));

    /// <summary>sum + (d·x0, d·x1, d·x2, d·x3): one row against 4 others (the weight gradients' 4 channels at a time).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Float4 Dots(Float4 sum, Float4 d, Float4 x0, Float4 x1, Float4 x2, Float4 x3) =>
        new(sum.X + Float4.Dot(d, x0), sum.Y + Float4.Dot(d, x1), sum.Z + Float4.Dot(d, x2), sum.W + Float4.Dot(d, x3));

    // =====================================================================================================
    // Forward (blocked): also the stride-1 backward-input pass, as a convolution of the padded dy
    // =====================================================================================================

    // xp [N,Cin,Hp,Wp4] Float4 (zero-padded x), wp [CoB,Cin,9] Float4 -> y [N,Cout,Ho,Wo], stride 2:
    // y[n,co,oy,ox] = b[co] + Σ_ci Σ_{ky,kx<3} w[co,ci,ky,kx]·xp[n,ci,2·oy+ky,2·ox+kx]
    // Thread: 4 output channels × 4 consecutive pixels of one output row. Per input channel: 3 packed rows of 3 Float4
    // (Stride2Windows) and 9 Float4 of weights, then one 9-term dot product into each of the 16 sums: 144 multiply-adds
    // per 18 loads. (An 8-channel version, 288 per 24 at stride 1, used about twice the CPU time: its 32 sums and 18
    // weight Float4s no longer fit in registers.)
    internal readonly struct Forward3x3S2BlockedKernel(ArrayView<Float4> packedX, ArrayView<Float4> packedW, ArrayView<float> bias, Addend add, ArrayView<float> y, Blocked geometry) : IThreadKernel
    {
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Execute(int index)
        {
            var (xp, wp, g) = (packedX, packedW, geometry); // locals: see Forward3x3S1BlockedKernel
            int t = index;
            int xb = t % g.XB; t /= g.XB;
            int oy = t % g.Ho; t /= g.Ho;
            int cb = t % g.CoB;
            int n = t / g.CoB;
            Float4 a0 = default, a1 = default, a2 = default, a3 = default;
            int row = (n * g.Cin * g.Hp + 2 * oy) * g.Wp4 + 2 * xb;
            int plane = g.Hp * g.Wp4;
            int wi = cb * g.Cin * 9;
            for (int ci = 0; ci < g.Cin; ci++, row += plane, wi += 9)
            {
                Row3 r0 = Stride2Windows(xp, row), r1 = Stride2Windows(xp, row + g.Wp4), r2 = Stride2Windows(xp, row + 2 * g.Wp4);
                Float4 k0 = wp[wi], k1 = wp[wi + 1], k2 = wp[wi + 2], k3 = wp[wi + 3], k4 = wp[wi + 4];
                Float4 k5 = wp[wi + 5], k6 = wp[wi + 6], k7 = wp[wi + 7], k8 = wp[wi + 8];
                a0 = Taps(a0, k0.X, k1.X, k2.X, k3.X, k4.X, k5.X, k6.X, k7.X, k8.X, r0, r1, r2);
                a1 = Taps(a1, k0.Y, k1.Y, k2.Y, k3.Y, k4.Y, k5.Y, k6.Y, k7.Y, k8.Y, r0, r1, r2);
                a2 = Taps(a2, k0.Z, k1.Z, k2.Z, k3.Z, k4.Z, k5.Z, k6.Z, k7.Z, k8.Z, r0, r1, r2);
                a3 = Taps(a3, k0.W, k1.W, k2.W, k3.W, k4.W, k5.W, k6.W, k7.W, k8.W, r0, r1, r2);
            }
            StoreBlock(y, bias, add, g, n, cb, oy, xb * 4, a0, a1, a2, a3);
        }
    }

    // The kernel above at stride 1 (y += … when Accumulate: also the stride-1 backward-input pass, over the padded dy),
    // 6 Float4 loads per input channel: 144 multiply-adds per 15 loads. Its 16 sums are plain locals and each tap reads
    // the row's two Float4s directly; over Row3 windows (shuffled copies passed by value) it measured 3–7 % slower.
    internal readonly struct Forward3x3S1BlockedKernel(ArrayView<Float4> packedX, ArrayView<Float4> packedW, ArrayView<float> bias, Addend add, ArrayView<float> y, Blocked geometry) : IThreadKernel
    {
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Execute(int index)
        {
            // Locals, not fields of this: the kernel struct is passed by reference to Execute, so each field read is a load
            // the JIT does not hoist; as locals they stay in registers (1.1–1.2× faster on the CPU accelerator, 2026-12-02).
            var (xp, wp, g) = (packedX, packedW, geometry);
            int t = index;
            int xb = t % g.XB; t /= g.XB;
            int oy = t % g.Ho; t /= g.Ho;
            int cb = t % g.CoB;
            int n = t / g.CoB;
            float a00 = 0f, a01 = 0f, a02 = 0f, a03 = 0f, a10 = 0f, a11 = 0f, a12 = 0f, a13 = 0f;
            float a20 = 0f, a21 = 0f, a22 = 0f, a23 = 0f, a30 = 0f, a31 = 0f, a32 = 0f, a33 = 0f;
            int row = (n * g.Cin * g.Hp + oy) * g.Wp4 + xb;
            int plane = g.Hp * g.Wp4;
            int wi = cb * g.Cin * 9;
            for (int ci = 0; ci < g.Cin; ci++, row += plane, wi += 9)
            {
                Float4 p0 = xp[row], q0 = xp[row + 1];
                Float4 p1 = xp[row + g.Wp4], q1 = xp[row + g.Wp4 + 1];
                Float4 p2 = xp[row + 2 * g.Wp4], q2 = xp[row + 2 * g.Wp4 + 1];
                Float4 k0 = wp[wi], k1 = wp[wi + 1], k2 = wp[wi + 2], k3 = wp[wi + 3], k4 = wp[wi + 4];
                Float4 k5 = wp[wi + 5], k6 = wp[wi + 6], k7 = wp[wi + 7], k8 = wp[wi + 8];
                a00 += k0.X * p0.X + k1.X * p0.Y + k2.X * p0.Z + k3.X * p1.X + k4.X * p1.Y + k5.X * p1.Z + k6.X * p2.X + k7.X * p2.Y + k8.X * p2.Z;
                a01 += k0.X * p0.Y + k1.X * p0.Z + k2.X * p0.W + k3.X * p1.Y + k4.X * p1.Z + k5.X * p1.W + k6.X * p2.Y + k7.X * p2.Z + k8.X * p2.W;
                a02 += k0.X * p0.Z + k1.X * p0.W + k2.X * q0.X + k3.X * p1.Z + k4.X * p1.W + k5.X * q1.X + k6.X * p2.Z + k7.X * p2.W + k8.X * q2.X;
                a03 += k0.X * p0.W + k1.X * q0.X + k2.X * q0.Y + k3.X * p1.W + k4.X * q1.X + k5.X * q1.Y + k6.X * p2.W + k7.X * q2.X + k8.X * q2.Y;
                a10 += k0.Y * p0.X + k1.Y * p0.Y + k2.Y * p0.Z + k3.Y * p1.X + k4.Y * p1.Y + k5.Y * p1.Z + k6.Y * p2.X + k7.Y * p2.Y + k8.Y * p2.Z;
                a11 += k0.Y * p0.Y + k1.Y * p0.Z + k2.Y * p0.W + k3.Y * p1.Y + k4.Y * p1.Z + k5.Y * p1.W + k6.Y * p2.Y + k7.Y * p2.Z + k8.Y * p2.W;
                a12 += k0.Y * p0.Z + k1.Y * p0.W + k2.Y * q0.X + k3.Y * p1.Z + k4.Y * p1.W + k5.Y * q1.X + k6.Y * p2.Z + k7.Y * p2.W + k8.Y * q2.X;
                a13 += k0.Y * p0.W + k1.Y * q0.X + k2.Y * q0.Y + k3.Y * p1.W + k4.Y * q1.X + k5.Y * q1.Y + k6.Y * p2.W + k7.Y * q2.X + k8.Y * q2.Y;
                a20 += k0.Z * p0.X + k1.Z * p0.Y + k2.Z * p0.Z + k3.Z * p1.X + k4.Z * p1.Y + k5.Z * p1.Z + k6.Z * p2.X + k7.Z * p2.Y + k8.Z * p2.Z;
                a21 += k0.Z * p0.Y + k1.Z * p0.Z + k2.Z * p0.W + k3.Z * p1.Y + k4.Z * p1.Z + k5.Z * p1.W + k6.Z * p2.Y + k7.Z * p2.Z + k8.Z * p2.W;
                a22 += k0.Z * p0.Z + k1.Z * p0.W + k2.Z * q0.X + k3.Z * p1.Z + k4.Z * p1.W + k5.Z * q1.X + k6.Z * p2.Z + k7.Z * p2.W + k8.Z * q2.X;
                a23 += k0.Z * p0.W + k1.Z * q0.X + k2.Z * q0.Y + k3.Z * p1.W + k4.Z * q1.X + k5.Z * q1.Y + k6.Z * p2.W + k7.Z * q2.X + k8.Z * q2.Y;
                a30 += k0.W * p0.X + k1.W * p0.Y + k2.W * p0.Z + k3.W * p1.X + k4.W * p1.Y + k5.W * p1.Z + k6.W * p2.X + k7.W * p2.Y + k8.W * p2.Z;
                a31 += k0.W * p0.Y + k1.W * p0.Z + k2.W * p0.W + k3.W * p1.Y + k4.W * p1.Z + k5.W * p1.W + k6.W * p2.Y + k7.W * p2.Z + k8.W * p2.W;
                a32 += k0.W * p0.Z + k1.W * p0.W + k2.W * q0.X + k3.W * p1.Z + k4.W * p1.W + k5.W * q1.X + k6.W * p2.Z + k7.W * p2.W + k8.W * q2.X;
                a33 += k0.W * p0.W + k1.W * q0.X + k2.W * q0.Y + k3.W * p1.W + k4.W * q1.X + k5.W * q1.Y + k6.W * p2.W + k7.W * q2.X + k8.W * q2.Y;
            }
            StoreBlock(y, bias, add, g, n, cb, oy, xb * 4, new(a00, a01, a02, a03), new(a10, a11, a12, a13), new(a20, a21, a22, a23), new(a30, a31, a32, a33));
        }
    }

    // xp [N,Cin(padded to 4),1,P] Float4, wp [CoB,Cin,1] Float4 -> y [N,Cout,P] (P = H·W flattened)
    // y[n,co,p] = b[co] + Σ_ci w[co,ci]·x[n,ci,p]
    // Thread: 4 output channels × 8 consecutive pixels; per 4 input channels 8 Float4 of x and 4 of weights,
    // then a 4-term dot product into each of the 32 sums. 128 multiply-adds per 12 loads.
    internal readonly struct Forward1x1BlockedKernel(ArrayView<Float4> packedX, ArrayView<Float4> packedW, ArrayView<float> bias, Addend add, ArrayView<float> y, Blocked geometry) : IThreadKernel
    {
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Execute(int index)
        {
            var (xp, wp, g) = (packedX, packedW, geometry); // locals: see Forward3x3S1BlockedKernel
            int t = index;
            int xb = t % g.XB; t /= g.XB;
            int cb = t % g.CoB;
            int n = t / g.CoB;
            Float4 a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
            int row = n * g.Cin * g.Wp4 + 2 * xb;
            int wi = cb * g.Cin;
            for (int ci = 0; ci < g.Cin; ci += 4, row += 4 * g.Wp4, wi += 4)
            {
                Float4 p0 = xp[row], q0 = xp[row + 1];
                Float4 p1 = xp[row + g.Wp4], q1 = xp[row + g.Wp4 + 1];
                Float4 p2 = xp[row + 2 * g.Wp4], q2 = xp[row + 2 * g.Wp4 + 1];
                Float4 p3 = xp[row + 3 * g.Wp4], q3 = xp[row + 3 * g.Wp4 + 1];
                Float4 k0 = wp[wi], k1 = wp[wi + 1], k2 = wp[wi + 2], k3 = wp[wi + 3];
                a0 = Channels4(a0, k0.X, k1.X, k2.X, k3.X, p0, p1, p2, p3); b0 = Channels4(b0, k0.X, k1.X, k2.X, k3.X, q0, q1, q2, q3);
                a1 = Channels4(a1, k0.Y, k1.Y, k2.Y, k3.Y, p0, p1, p2, p3); b1 = Channels4(b1, k0.Y, k1.Y, k2.Y, k3.Y, q0, q1, q2, q3);
                a2 = Channels4(a2, k0.Z, k1.Z, k2.Z, k3.Z, p0, p1, p2, p3); b2 = Channels4(b2, k0.Z, k1.Z, k2.Z, k3.Z, q0, q1, q2, q3);
                a3 = Channels4(a3, k0.W, k1.W, k2.W, k3.W, p0, p1, p2, p3); b3 = Channels4(b3, k0.W, k1.W, k2.W, k3.W, q0, q1, q2, q3);
            }
            int px = 8 * xb;
            StoreBlock(y, bias, add, g, n, cb, 0, px, a0, a1, a2, a3);
            if (px + 4 < g.Wo) StoreBlock(y, bias, add, g, n, cb, 0, px + 4, b0, b1, b2, b3);
        }
    }

    /// <summary>Writes (or adds) a 4-channel × 4-pixel block at row oy, columns ox0.., skipping what lies outside.</summary>
    private static void StoreBlock(ArrayView<float> y, ArrayView<float> bias, Addend add, Blocked g, int n, int cb, int oy, int ox0, Float4 c0, Float4 c1, Float4 c2, Float4 c3)
    {
        int co = 4 * cb;
        int count = Math.Min(4, g.Wo - ox0);
        int plane = g.Ho * g.Wo;
        int at = ((n * g.Cout + co) * g.Ho + oy) * g.Wo + ox0;
        int nc = n * g.Cout + co;
        StoreRow(y, bias, add, g, co, nc, at, count, c0);
        if (co + 1 < g.Cout) StoreRow(y, bias, add, g, co + 1, nc + 1, at + plane, count, c1);
        if (co + 2 < g.Cout) StoreRow(y, bias, add, g, co + 2, nc + 2, at + 2 * plane, count, c2);
        if (co + 3 < g.Cout) StoreRow(y, bias, add, g, co + 3, nc + 3, at + 3 * plane, count, c3);
    }

    // Row `count` ≤ 4 outputs from `at` of output plane nc = n·Cout + co: y += v (Accumulate), else y = (v + b[co]) + the addend.
    private static void StoreRow(ArrayView<float> y, ArrayView<float> bias, Addend add, Blocked g, int co, int nc, int at, int count, Float4 v)
    {
        if (g.Accumulate != 0)
        {
            y[at] += v.X;
            if (count > 1) y[at + 1] += v.Y;
            if (count > 2) y[at + 2] += v.Z;
            if (count > 3) y[at + 3] += v.W;
            return;
        }
        float b = g.HasBias != 0 ? bias[co] : 0f;
        y[at] = add.To(v.X + b, nc, at);
        if (count > 1) y[at + 1] = add.To(v.Y + b, nc, at + 1);
        if (count > 2) y[at + 2] = add.To(v.Z + b, nc, at + 2);
        if (count > 3) y[at + 3] = add.To(v.W + b, nc, at + 3);
    }

    // =====================================================================================================
    // Weight gradient (blocked)
    // =====================================================================================================

    // xp [N,Cin,Hp,Wp4] Float4 (zero-padded x), dyp [N,CoutP,Ho,XB] Float4 (dy, rows padded with zeros to
    // whole Float4s) -> dw [Cout,Cin,3,3]:  dw[co,ci,ky,kx] += Σ_{n,oy,ox} dy[n,co,oy,ox]·xp[n,ci,oy+ky,ox+kx]
    // Thread: 4 output channels × one input channel × all 9 taps (36 sums). Per 4 pixels of a row: 4 Float4
    // of dy, 3 rows × 2 Float4 of x, and a 4-term dot product into each sum. 144 multiply-adds per 10 loads.
    // Its 36 sums stay plain locals: written over Row3 windows (as the forward is) it took 1.3–2× the CPU time.
    internal readonly struct WeightGrad3x3S1BlockedKernel(ArrayView<Float4> packedX, ArrayView<Float4> packedDy, ArrayView<float> dw, Blocked geometry) : IThreadKernel
    {
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Execute(int index)
        {
            var (xp, dyp, g) = (packedX, packedDy, geometry); // locals: see Forward3x3S1BlockedKernel
            int ci = index % g.Cin;
            int cb = index / g.Cin;
            float s000 = 0f, s001 = 0f, s002 = 0f, s010 = 0f, s011 = 0f, s012 = 0f, s020 = 0f, s021 = 0f, s022 = 0f;
            float s100 = 0f, s101 = 0f, s102 = 0f, s110 = 0f, s111 = 0f, s112 = 0f, s120 = 0f, s121 = 0f, s122 = 0f;
            float s200 = 0f, s201 = 0f, s202 = 0f, s210 = 0f, s211 = 0f, s212 = 0f, s220 = 0f, s221 = 0f, s222 = 0f;
            float s300 = 0f, s301 = 0f, s302 = 0f, s310 = 0f, s311 = 0f, s312 = 0f, s320 = 0f, s321 = 0f, s322 = 0f;
            int dyPlane = g.Ho * g.XB;
            for (int n = 0; n < g.N; n++)
            {
                for (int oy = 0; oy < g.Ho; oy++)
                {
                    int xr = ((n * g.Cin + ci) * g.Hp + oy) * g.Wp4;
                    int dr = ((n * g.CoutP + 4 * cb) * g.Ho + oy) * g.XB;
                    for (int xb = 0; xb < g.XB; xb++)
                    {
                        Float4 d0 = dyp[dr + xb], d1 = dyp[dr + dyPlane + xb], d2 = dyp[dr + 2 * dyPlane + xb], d3 = dyp[dr + 3 * dyPlane + xb];
                        int r0 = xr + xb, r1 = r0 + g.Wp4, r2 = r1 + g.Wp4;
                        Float4 p0 = xp[r0], q0 = xp[r0 + 1];
                        Float4 p1 = xp[r1], q1 = xp[r1 + 1];
                        Float4 p2 = xp[r2], q2 = xp[r2 + 1];
                    s000 += d0.X * p0.X + d0.Y * p0.Y + d0.Z * p0.Z + d0.W * p0.W;
                    s001 += d0.X * p0.Y + d0.Y * p0.Z + d0.Z * p0.W + d0.W * q0.X;
                    s002 += d0.X * p0.Z + d0.Y * p0.W + d0.Z * q0.X + d0.W * q0.Y;
                    s010 += d0.X * p1.X + d0.Y * p1.Y + d0.Z * p1.Z + d0.W * p1.W;
                    s011 += d0.X * p1.Y + d0.Y * p1.Z + d0.Z * p1.W + d0.W * q1.X;
                    s012 += d0.X * p1.Z + d0.Y * p1.W + d0.Z * q1.X + d0.W * q1.Y;
                    s020 += d0.X * p2.X + d0.Y * p2.Y + d0.Z * p2.Z + d0.W * p2.W;
                    s021 += d0.X * p2.Y + d0.Y * p2.Z + d0.Z * p2.W + d0.W * q2.X;
                    s022 += d0.X * p2.Z + d0.Y * p2.W + d0.Z * q2.X + d0.W * q2.Y;
                    s100 += d1.X * p0.X + d1.Y * p0.Y + d1.Z * p0.Z + d1.W * p0.W;
                    s101 += d1.X * p0.Y + d1.Y * p0.Z + d1.Z * p0.W + d1.W * q0.X;
                    s102 += d1.X * p0.Z + d1.Y * p0.W + d1.Z * q0.X + d1.W * q0.Y;
                    s110 += d1.X * p1.X + d1.Y * p1.Y + d1.Z * p1.Z + d1.W * p1.W;
                    s111 += d1.X * p1.Y + d1.Y * p1.Z + d1.Z * p1.W + d1.W * q1.X;
                    s112 += d1.X * p1.Z + d1.Y * p1.W + d1.Z * q1.X + d1.W * q1.Y;
                    s120 += d1.X * p2.X + d1.Y * p2.Y + d1.Z * p2.Z + d1.W * p2.W;
                    s121 += d1.X * p2.Y + d1.Y * p2.Z + d1.Z * p2.W + d1.W * q2.X;
                    s122 += d1.X * p2.Z + d1.Y * p2.W + d1.Z * q2.X + d1.W * q2.Y;
                    s200 += d2.X * p0.X + d2.Y * p0.Y + d2.Z * p0.Z + d2.W * p0.W;
                    s201 += d2.X * p0.Y + d2.Y * p0.Z + d2.Z * p0.W + d2.W * q0.X;
                    s202 += d2.X * p0.Z + d2.Y * p0.W + d2.Z * q0.X + d2.W * q0.Y;
                    s210 += d2.X * p1.X + d2.Y * p1.Y + d2.Z * p1.Z + d2.W * p1.W;
                    s211 += d2.X * p1.Y + d2.Y * p1.Z + d2.Z * p1.W + d2.W * q1.X;
                    s212 += d2.X * p1.Z + d2.Y * p1.W + d2.Z * q1.X + d2.W * q1.Y;
                    s220 += d2.X * p2.X + d2.Y * p2.Y + d2.Z * p2.Z + d2.W * p2.W;
                    s221 += d2.X * p2.Y + d2.Y * p2.Z + d2.Z * p2.W + d2.W * q2.X;
                    s222 += d2.X * p2.Z + d2.Y * p2.W + d2.Z * q2.X + d2.W * q2.Y;
                    s300 += d3.X * p0.X + d3.Y * p0.Y + d3.Z * p0.Z + d3.W * p0.W;
                    s301 += d3.X * p0.Y + d3.Y * p0.Z + d3.Z * p0.W + d3.W * q0.X;
                    s302 += d3.X * p0.Z + d3.Y * p0.W + d3.Z * q0.X + d3.W * q0.Y;
                    s310 += d3.X * p1.X + d3.Y * p1.Y + d3.Z * p1.Z + d3.W * p1.W;
                    s311 += d3.X * p1.Y + d3.Y * p1.Z + d3.Z * p1.W + d3.W * q1.X;
                    s312 += d3.X * p1.Z + d3.Y * p1.W + d3.Z * q1.X + d3.W * q1.Y;
                    s320 += d3.X * p2.X + d3.Y * p2.Y + d3.Z * p2.Z + d3.W * p2.W;
                    s321 += d3.X * p2.Y + d3.Y * p2.Z + d3.Z * p2.W + d3.W * q2.X;
                    s322 += d3.X * p2.Z + d3.Y * p2.W + d3.Z * q2.X + d3.W * q2.Y;
                    }
                }
            }
            int co = 4 * cb;
            int at0 = (co * g.Ci + ci) * 9, channel = g.Ci * 9;
            AddTaps(dw, at0, s000, s001, s002, s010, s011, s012, s020, s021, s022);
            if (co + 1 < g.Cout) AddTaps(dw, at0 + channel, s100, s101, s102, s110, s111, s112, s120, s121, s122);
            if (co + 2 < g.Cout) AddTaps(dw, at0 + 2 * channel, s200, s201, s202, s210, s211, s212, s220, s221, s222);
            if (co + 3 < g.Cout) AddTaps(dw, at0 + 3 * channel, s300, s301, s302, s310, s311, s312, s320, s321, s322);
        }
    }

    // As above for stride 2: dw[co,ci,ky,kx] += Σ dy[n,co,oy,ox]·xp[n,ci,2·oy+ky,2·ox+kx]; 3 Float4 per x row,
    // read as Stride2Windows. (Only the downsampling convs run it.)
    internal readonly struct WeightGrad3x3S2BlockedKernel(ArrayView<Float4> packedX, ArrayView<Float4> packedDy, ArrayView<float> dw, Blocked geometry) : IThreadKernel
    {
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Execute(int index)
        {
            var (xp, dyp, g) = (packedX, packedDy, geometry); // locals: see Forward3x3S1BlockedKernel
            int ci = index % g.Cin, cb = index / g.Cin;
            // t{ky}{kx}: the sums of tap (ky, kx) for output channels 4·cb + 0..3 (X..W).
            Float4 t00 = default, t01 = default, t02 = default, t10 = default, t11 = default, t12 = default, t20 = default, t21 = default, t22 = default;
            int dyPlane = g.Ho * g.XB;
            for (int n = 0; n < g.N; n++)
            {
                for (int oy = 0; oy < g.Ho; oy++)
                {
                    int xr = ((n * g.Cin + ci) * g.Hp + 2 * oy) * g.Wp4;
                    int dr = ((n * g.CoutP + 4 * cb) * g.Ho + oy) * g.XB;
                    for (int xb = 0; xb < g.XB; xb++)
                    {
                        Float4 d0 = dyp[dr + xb], d1 = dyp[dr + dyPlane + xb], d2 = dyp[dr + 2 * dyPlane + xb], d3 = dyp[dr + 3 * dyPlane + xb];
                        int at = xr + 2 * xb;
                        Row3 r0 = Stride2Windows(xp, at), r1 = Stride2Windows(xp, at + g.Wp4), r2 = Stride2Windows(xp, at + 2 * g.Wp4);
                        t00 = Dots(t00, r0.K0, d0, d1, d2, d3); t01 = Dots(t01, r0.K1, d0, d1, d2, d3); t02 = Dots(t02, r0.K2, d0, d1, d2, d3);
                        t10 = Dots(t10, r1.K0, d0, d1, d2, d3); t11 = Dots(t11, r1.K1, d0, d1, d2, d3); t12 = Dots(t12, r1.K2, d0, d1, d2, d3);
                        t20 = Dots(t20, r2.K0, d0, d1, d2, d3); t21 = Dots(t21, r2.K1, d0, d1, d2, d3); t22 = Dots(t22, r2.K2, d0, d1, d2, d3);
                    }
                }
            }
            int co = 4 * cb;
            int at0 = (co * g.Ci + ci) * 9, channel = g.Ci * 9;
            AddTaps(dw, at0, t00.X, t01.X, t02.X, t10.X, t11.X, t12.X, t20.X, t21.X, t22.X);
            if (co + 1 < g.Cout) AddTaps(dw, at0 + channel, t00.Y, t01.Y, t02.Y, t10.Y, t11.Y, t12.Y, t20.Y, t21.Y, t22.Y);
            if (co + 2 < g.Cout) AddTaps(dw, at0 + 2 * channel, t00.Z, t01.Z, t02.Z, t10.Z, t11.Z, t12.Z, t20.Z, t21.Z, t22.Z);
            if (co + 3 < g.Cout) AddTaps(dw, at0 + 3 * channel, t00.W, t01.W, t02.W, t10.W, t11.W, t12.W, t20.W, t21.W, t22.W);
        }
    }

    /// <summary>dw[at + tap] += t[tap] for the 9 taps of one (output, input) channel pair.</summary>
    private static void AddTaps(ArrayView<float> dw, int at, float t0, float t1, float t2, float t3, float t4, float t5, float t6, float t7, float t8)
    {
        dw[at] += t0; dw[at + 1] += t1; dw[at + 2] += t2;
        dw[at + 3] += t3; dw[at + 4] += t4; dw[at + 5] += t5;
        dw[at + 6] += t6; dw[at + 7] += t7; dw[at + 8] += t8;
    }
}
