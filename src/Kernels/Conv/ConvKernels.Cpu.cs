using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;
using IlgpuDdpm.Kernels.Device;

namespace IlgpuDdpm.Kernels.Conv;

// The CPU accelerator's convolution kernels (ConvVariant.Blocked) for the shapes the U-Net runs: 3×3 at
// stride 1 and 2 and 1×1. The reduction input is first copied into a zero-padded buffer whose rows are
// whole Float4s and the weights into groups of 4 output channels; then each thread computes a register
// block with no bounds checks, loading each input once per block and adding whole hand-unrolled dot
// products into its sums. On ILGPU's CPU accelerator every view access costs a range check, a buffer
// check and a possible call, so four floats per access and many multiply-adds per load is what makes
// these faster than the GEMM core's element-wise im2col loads (bench/RESULTS.md, Conv rows). Every other
// shape, and the stride-2 backward-input pass, runs the GEMM core.
public sealed partial class ConvKernels
{
    // Kernel argument types are public only because ILGPU's CPU accelerator builds its launch code in a
    // separate dynamic assembly, which cannot see internal types.

    /// <summary>Four floats loaded or stored with one view access (blocked kernels' packed operands).</summary>
    public struct Float4
    {
        public float X, Y, Z, W;
    }

    /// <summary>
    /// A zero-padded copy of an NCHW tensor: dst[n, c, r, q] = src[n, c, (r − PadTop)/Dilation, (q − PadLeft)/Dilation]
    /// where that divides evenly and lies inside, else 0; Cp ≥ C channels (the extra ones zero), Hp rows of Wp4 Float4s.
    /// </summary>
    public struct Packing
    {
        public int C, H, W;
        public int Cp, Hp, Wp4;
        public int PadTop, PadLeft, Dilation;
        public readonly int Rows(int n) => n * Cp * Hp;
        public readonly int Floats(int n) => n * Cp * Hp * Wp4 * 4;
    }

    /// <summary>Dimensions of a blocked launch (fields unused by a kernel are 0).</summary>
    public struct Blocked
    {
        /// <summary>Images, reduction channels (as packed: a multiple of 4 for the 1×1 kernels).</summary>
        public int N, Cin;
        /// <summary>Packed input rows per channel and Float4s per row.</summary>
        public int Hp, Wp4;
        /// <summary>Output channels, blocks of 4 of them, channels of the packed dy (weight gradient).</summary>
        public int Cout, CoB, CoutP;
        /// <summary>Real input channels and blocks of 4 of them (weight gradient).</summary>
        public int Ci, CiB;
        /// <summary>Output rows and columns, pixel blocks per output row.</summary>
        public int Ho, Wo, XB;
        /// <summary>Kernel size and stride (generic kernels).</summary>
        public int K, Stride;
        /// <summary>1: out += result (backward-input); 0: out = result + bias.</summary>
        public int Accumulate, HasBias;
    }


    private Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<Float4>, Packing> packInput = null!;
    private Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<Float4>, int, int, int, int, int> packWeights = null!;
    private Action<AcceleratorStream, Index1D, ArrayView<Float4>, ArrayView<Float4>, ArrayView<float>, ArrayView<float>, Blocked> forward3x3S1 = null!;
    private Action<AcceleratorStream, Index1D, ArrayView<Float4>, ArrayView<Float4>, ArrayView<float>, ArrayView<float>, Blocked> forward3x3S2 = null!;
    private Action<AcceleratorStream, Index1D, ArrayView<Float4>, ArrayView<Float4>, ArrayView<float>, ArrayView<float>, Blocked> forward1x1 = null!;
    private Action<AcceleratorStream, Index1D, ArrayView<Float4>, ArrayView<Float4>, ArrayView<float>, Blocked> weightGrad3x3S1 = null!;
    private Action<AcceleratorStream, Index1D, ArrayView<Float4>, ArrayView<Float4>, ArrayView<float>, Blocked> weightGrad3x3S2 = null!;
    private Action<AcceleratorStream, Index1D, ArrayView<Float4>, ArrayView<Float4>, ArrayView<float>, Blocked> weightGrad1x1 = null!;

    private void LoadBlockedKernels()
    {
        // Barrier-free kernels: one thread per group on the CPU accelerator (see StreamingKernelLoader).
        packInput = device.LoadStreamingKernel<ArrayView<float>, ArrayView<Float4>, Packing>(PackInputKernel);
        packWeights = device.LoadStreamingKernel<ArrayView<float>, ArrayView<Float4>, int, int, int, int, int>(PackWeightsKernel);
        forward3x3S1 = device.LoadStreamingKernel<ArrayView<Float4>, ArrayView<Float4>, ArrayView<float>, ArrayView<float>, Blocked>(Forward3x3S1BlockedKernel);
        forward3x3S2 = device.LoadStreamingKernel<ArrayView<Float4>, ArrayView<Float4>, ArrayView<float>, ArrayView<float>, Blocked>(Forward3x3S2BlockedKernel);
        forward1x1 = device.LoadStreamingKernel<ArrayView<Float4>, ArrayView<Float4>, ArrayView<float>, ArrayView<float>, Blocked>(Forward1x1BlockedKernel);
        weightGrad3x3S1 = device.LoadStreamingKernel<ArrayView<Float4>, ArrayView<Float4>, ArrayView<float>, Blocked>(WeightGrad3x3S1BlockedKernel);
        weightGrad3x3S2 = device.LoadStreamingKernel<ArrayView<Float4>, ArrayView<Float4>, ArrayView<float>, Blocked>(WeightGrad3x3S2BlockedKernel);
        weightGrad1x1 = device.LoadStreamingKernel<ArrayView<Float4>, ArrayView<Float4>, ArrayView<float>, Blocked>(WeightGrad1x1BlockedKernel);
    }

    /// <summary>The 1×1, stride-1, unpadded case: a plain product per image.</summary>
    private static bool IsPointwise(ConvShape s) => s.K == 1 && s.Stride == 1 && s.Padding == 0;

    /// <summary>Whether the blocked kernels cover <paramref name="s"/>'s forward and weight-gradient passes.</summary>
    private static bool HasBlockedKernel(ConvShape s) => IsPointwise(s) || (s.K == 3 && s.Stride <= 2);

    private void ForwardBlocked(ArrayView<float> x, ArrayView<float> w, ArrayView<float> bias, int hasBias, ArrayView<float> y, ConvShape s)
    {
        if (IsPointwise(s))
        {
            // A plain GEMM per image: pixels flattened, channels padded to a multiple of 4.
            int pixels = s.H * s.W;
            int xb = (pixels + 7) / 8;
            var pack = new Packing { C = s.Cin, H = 1, W = pixels, Cp = RoundUp4(s.Cin), Hp = 1, Wp4 = 2 * xb, Dilation = 1 };
            var g = new Blocked { N = s.N, Cin = pack.Cp, Hp = 1, Wp4 = pack.Wp4, Cout = s.Cout, CoB = Blocks4(s.Cout), Ho = 1, Wo = pixels, XB = xb, HasBias = hasBias };
            using var xp = PackInput(x, s.N, pack);
            using var wp = PackWeights(w, s.Cout, s.Cin, 1, pack.Cp, transpose: false);
            forward1x1(device.Stream, s.N * g.CoB * xb, View4(xp), View4(wp), bias, y, g);
            return;
        }
        int stride = s.Stride;
        var (hp, wp4, xbs) = Plan3x3(stride, s.Ho, s.Wo);
        var packing = new Packing { C = s.Cin, H = s.H, W = s.W, Cp = s.Cin, Hp = hp, Wp4 = wp4, PadTop = s.Padding, PadLeft = s.Padding, Dilation = 1 };
        var geometry = new Blocked { N = s.N, Cin = s.Cin, Hp = hp, Wp4 = wp4, Cout = s.Cout, CoB = Blocks4(s.Cout), Ho = s.Ho, Wo = s.Wo, XB = xbs, K = 3, Stride = stride, HasBias = hasBias };
        using var xpacked = PackInput(x, s.N, packing);
        using var weights = PackWeights(w, s.Cout, s.Cin, 9, s.Cin, transpose: false, evenBlocks: stride == 1);
        Launch3x3(stride, xpacked, weights, bias, y, geometry);
    }

    /// <summary>The stride-1 backward-input pass (3×3 or 1×1); false when <paramref name="s"/> has no blocked kernel.</summary>
    private bool BackwardInputBlocked(ArrayView<float> dy, ArrayView<float> w, ArrayView<float> dx, ConvShape s)
    {
        if (IsPointwise(s))
        {
            // dx = wᵀ·dy per image: the 1×1 forward kernel with the weight transposed.
            int pixels = s.H * s.W;
            int xb = (pixels + 7) / 8;
            var pack = new Packing { C = s.Cout, H = 1, W = pixels, Cp = RoundUp4(s.Cout), Hp = 1, Wp4 = 2 * xb, Dilation = 1 };
            var g = new Blocked { N = s.N, Cin = pack.Cp, Hp = 1, Wp4 = pack.Wp4, Cout = s.Cin, CoB = Blocks4(s.Cin), Ho = 1, Wo = pixels, XB = xb, Accumulate = 1 };
            using var dyp = PackInput(dy, s.N, pack);
            using var wp = PackWeights(w, s.Cout, s.Cin, 1, pack.Cp, transpose: true);
            forward1x1(device.Stream, s.N * g.CoB * xb, View4(dyp), View4(wp), dx, dx, g);
            return true;
        }
        if (s.K != 3 || s.Stride != 1) return false;
        // The transposed convolution at stride 1 is a convolution of dy padded by K−1−p with the weight
        // transposed (Cin ↔ Cout) and rotated by 180°.
        var (hp, wp4, xbs) = Plan3x3(1, s.H, s.W);
        var packing = new Packing { C = s.Cout, H = s.Ho, W = s.Wo, Cp = s.Cout, Hp = hp, Wp4 = wp4, PadTop = 2 - s.Padding, PadLeft = 2 - s.Padding, Dilation = 1 };
        var geometry = new Blocked { N = s.N, Cin = s.Cout, Hp = hp, Wp4 = wp4, Cout = s.Cin, CoB = Blocks4(s.Cin), Ho = s.H, Wo = s.W, XB = xbs, K = 3, Stride = 1, Accumulate = 1 };
        using var dyp2 = PackInput(dy, s.N, packing);
        using var weights = PackWeights(w, s.Cout, s.Cin, 9, s.Cout, transpose: true, evenBlocks: true);
        Launch3x3(1, dyp2, weights, dx, dx, geometry);
        return true;
    }

    private void BackwardWeightBlocked(ArrayView<float> x, ArrayView<float> dy, ArrayView<float> dw, ConvShape s)
    {
        int coB = Blocks4(s.Cout);
        if (IsPointwise(s))
        {
            int pixels = s.H * s.W;
            int p4 = (pixels + 3) / 4;
            var xPack = new Packing { C = s.Cin, H = 1, W = pixels, Cp = RoundUp4(s.Cin), Hp = 1, Wp4 = p4, Dilation = 1 };
            var dyPack = new Packing { C = s.Cout, H = 1, W = pixels, Cp = coB * 4, Hp = 1, Wp4 = p4, Dilation = 1 };
            var g = new Blocked { N = s.N, Cin = xPack.Cp, Wp4 = p4, Cout = s.Cout, CoB = coB, CoutP = coB * 4, Ci = s.Cin, CiB = Blocks4(s.Cin) };
            using var xp = PackInput(x, s.N, xPack);
            using var dyp = PackInput(dy, s.N, dyPack);
            weightGrad1x1(device.Stream, coB * g.CiB, View4(xp), View4(dyp), dw, g);
            return;
        }
        var (hp, wp4, xbs) = Plan3x3(s.Stride, s.Ho, s.Wo);
        var packing = new Packing { C = s.Cin, H = s.H, W = s.W, Cp = s.Cin, Hp = hp, Wp4 = wp4, PadTop = s.Padding, PadLeft = s.Padding, Dilation = 1 };
        var dyPacking = new Packing { C = s.Cout, H = s.Ho, W = s.Wo, Cp = coB * 4, Hp = s.Ho, Wp4 = xbs, Dilation = 1 };
        var geometry = new Blocked { N = s.N, Cin = s.Cin, Hp = hp, Wp4 = wp4, Cout = s.Cout, CoB = coB, CoutP = coB * 4, Ci = s.Cin, Ho = s.Ho, Wo = s.Wo, XB = xbs, K = 3, Stride = s.Stride };
        using var packedX = PackInput(x, s.N, packing);
        using var packedDy = PackInput(dy, s.N, dyPacking);
        (s.Stride == 1 ? weightGrad3x3S1 : weightGrad3x3S2)(device.Stream, coB * s.Cin, View4(packedX), View4(packedDy), dw, geometry);
    }

    /// <summary>The packed input rows and Float4s per row a 3×3 kernel reads for an ho × wo output, and its 4-pixel blocks per row.</summary>
    private static (int Hp, int Wp4, int XB) Plan3x3(int stride, int ho, int wo)
    {
        int xb = (wo + 3) / 4;
        int hp = (ho - 1) * stride + 3;
        return stride == 1 ? (hp, xb + 1, xb) : (hp, 2 * xb + 1, xb); // block xb reads Float4s xb, xb+1 (stride 2: 2xb..2xb+2)
    }

    private void Launch3x3(int stride, DeviceBuffer<float> input, DeviceBuffer<float> weights, ArrayView<float> bias, ArrayView<float> output, Blocked g)
    {
        if (stride == 1)
        {
            g.CoB = (g.CoB + 1) / 2; // blocks of 8 channels
            forward3x3S1(device.Stream, g.N * g.CoB * g.Ho * g.XB, View4(input), View4(weights), bias, output, g);
        }
        else
        {
            forward3x3S2(device.Stream, g.N * g.CoB * g.Ho * g.XB, View4(input), View4(weights), bias, output, g);
        }
    }

    /// <summary>A pooled zero-padded copy of <paramref name="source"/> laid out by <paramref name="p"/>.</summary>
    private DeviceBuffer<float> PackInput(ArrayView<float> source, int n, Packing p)
    {
        var buffer = device.Pool.Rent<float>(p.Floats(n));
        packInput(device.Stream, p.Rows(n), source, View4(buffer), p);
        return buffer;
    }

    /// <summary>
    /// Pooled weights in groups of 4 output channels: [blocks][reduction channels (padded to <paramref name="reduction"/>)][K·K] Float4s.
    /// Transposed (backward-input): the groups run over Cin, the reduction over Cout, and the taps are rotated by 180°.
    /// </summary>
    private DeviceBuffer<float> PackWeights(ArrayView<float> w, int cout, int cin, int kk, int reduction, bool transpose, bool evenBlocks = false)
    {
        int blocks = Blocks4(transpose ? cin : cout);
        if (evenBlocks) blocks += blocks & 1; // an all-zero last block for the 8-channel kernel
        int count = blocks * reduction * kk;
        var buffer = device.Pool.Rent<float>(count * 4);
        packWeights(device.Stream, count, w, View4(buffer), cout, cin, kk, reduction, transpose ? 1 : 0);
        return buffer;
    }

    private static ArrayView<Float4> View4(DeviceBuffer<float> buffer) => buffer.View.Cast<Float4>();
    private static int Blocks4(int n) => (n + 3) / 4;
    private static int RoundUp4(int n) => (n + 3) / 4 * 4;

    // =====================================================================================================
    // Packing (blocked variant)
    // =====================================================================================================

    // src [N,C,H,W] -> dst [N,Cp,Hp,Wp4·4]: dst[n,c,r,q] = src[n,c,(r−PadTop)/d,(q−PadLeft)/d] when c < C and both
    // offsets are non-negative multiples of d inside the source, else 0. One thread per destination row.
    internal static void PackInputKernel(Index1D row, ArrayView<float> src, ArrayView<Float4> dst, Packing p)
    {
        int r = row % p.Hp;
        int nc = row / p.Hp;
        int c = nc % p.Cp;
        int n = nc / p.Cp;
        int sy = r - p.PadTop;
        int dstRow = row * p.Wp4;
        Float4 zero = default;
        if (c >= p.C || sy < 0 || sy % p.Dilation != 0 || sy / p.Dilation >= p.H)
        {
            for (int q = 0; q < p.Wp4; q++) dst[dstRow + q] = zero;
            return;
        }
        int srcRow = ((n * p.C + c) * p.H + sy / p.Dilation) * p.W;
        if (p.Dilation == 1)
        {
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
            return;
        }
        for (int q = 0; q < p.Wp4; q++)
        {
            int sx = 4 * q - p.PadLeft;
            Float4 v;
            v.X = Fetch(src, srcRow, sx, p);
            v.Y = Fetch(src, srcRow, sx + 1, p);
            v.Z = Fetch(src, srcRow, sx + 2, p);
            v.W = Fetch(src, srcRow, sx + 3, p);
            dst[dstRow + q] = v;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Fetch(ArrayView<float> src, int srcRow, int sx, Packing p) =>
        sx >= 0 && sx % p.Dilation == 0 && sx / p.Dilation < p.W ? src[srcRow + sx / p.Dilation] : 0f;

    // w [Cout,Cin,K·K] -> dst [blocks][reduction][K·K] Float4:
    //   forward    dst[(b·reduction + ci)·KK + k] = (w[4b+i, ci, k])_{i<4}, zero for 4b+i ≥ Cout or ci ≥ Cin
    //   transposed dst[(b·reduction + co)·KK + k] = (w[co, 4b+i, KK−1−k])_{i<4}, zero for 4b+i ≥ Cin or co ≥ Cout
    internal static void PackWeightsKernel(Index1D i, ArrayView<float> w, ArrayView<Float4> dst, int cout, int cin, int kk, int reduction, int transpose)
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

    // =====================================================================================================
    // Forward (blocked): also the backward-input pass, as a stride-1 convolution of the dilated, padded dy
    // =====================================================================================================

    // xp [N,Cin,Hp,Wp4] Float4 (zero-padded x), wp [2·CoB,Cin,9] Float4 -> y [N,Cout,Ho,Wo]
    // y[n,co,oy,ox] = b[co] + Σ_ci Σ_{ky,kx<3} w[co,ci,ky,kx]·xp[n,ci,oy+ky,ox+kx]      (or y += … when Accumulate)
    // Thread: 8 output channels (two weight blocks; CoB counts blocks of 8 here) × 4 consecutive pixels of one
    // output row. Per input channel: 3 rows × 2 Float4 (the 6 inputs each row of the block needs) and 18 Float4
    // of weights, then one 9-term dot product into each of the 32 sums: 288 multiply-adds per 24 loads (a
    // 4-channel version did 144 per 15, and ran slower).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Forward3x3S1BlockedKernel(Index1D index, ArrayView<Float4> xp, ArrayView<Float4> wp, ArrayView<float> bias, ArrayView<float> y, Blocked g)
    {
        int t = index;
        int xb = t % g.XB; t /= g.XB;
        int oy = t % g.Ho; t /= g.Ho;
        int cb = t % g.CoB;
        int n = t / g.CoB;
        float a00 = 0f, a01 = 0f, a02 = 0f, a03 = 0f, a10 = 0f, a11 = 0f, a12 = 0f, a13 = 0f;
        float a20 = 0f, a21 = 0f, a22 = 0f, a23 = 0f, a30 = 0f, a31 = 0f, a32 = 0f, a33 = 0f;
        float a40 = 0f, a41 = 0f, a42 = 0f, a43 = 0f, a50 = 0f, a51 = 0f, a52 = 0f, a53 = 0f;
        float a60 = 0f, a61 = 0f, a62 = 0f, a63 = 0f, a70 = 0f, a71 = 0f, a72 = 0f, a73 = 0f;
        int row = (n * g.Cin * g.Hp + oy) * g.Wp4 + xb;
        int plane = g.Hp * g.Wp4;
        int wi = 2 * cb * g.Cin * 9, wj = wi + g.Cin * 9;
        for (int ci = 0; ci < g.Cin; ci++, row += plane, wi += 9, wj += 9)
        {
            Float4 p0 = xp[row], q0 = xp[row + 1];
            Float4 p1 = xp[row + g.Wp4], q1 = xp[row + g.Wp4 + 1];
            Float4 p2 = xp[row + 2 * g.Wp4], q2 = xp[row + 2 * g.Wp4 + 1];
            Float4 k0 = wp[wi], k1 = wp[wi + 1], k2 = wp[wi + 2], k3 = wp[wi + 3], k4 = wp[wi + 4];
            Float4 k5 = wp[wi + 5], k6 = wp[wi + 6], k7 = wp[wi + 7], k8 = wp[wi + 8];
            Float4 m0 = wp[wj], m1 = wp[wj + 1], m2 = wp[wj + 2], m3 = wp[wj + 3], m4 = wp[wj + 4];
            Float4 m5 = wp[wj + 5], m6 = wp[wj + 6], m7 = wp[wj + 7], m8 = wp[wj + 8];
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
            a40 += m0.X * p0.X + m1.X * p0.Y + m2.X * p0.Z + m3.X * p1.X + m4.X * p1.Y + m5.X * p1.Z + m6.X * p2.X + m7.X * p2.Y + m8.X * p2.Z;
            a41 += m0.X * p0.Y + m1.X * p0.Z + m2.X * p0.W + m3.X * p1.Y + m4.X * p1.Z + m5.X * p1.W + m6.X * p2.Y + m7.X * p2.Z + m8.X * p2.W;
            a42 += m0.X * p0.Z + m1.X * p0.W + m2.X * q0.X + m3.X * p1.Z + m4.X * p1.W + m5.X * q1.X + m6.X * p2.Z + m7.X * p2.W + m8.X * q2.X;
            a43 += m0.X * p0.W + m1.X * q0.X + m2.X * q0.Y + m3.X * p1.W + m4.X * q1.X + m5.X * q1.Y + m6.X * p2.W + m7.X * q2.X + m8.X * q2.Y;
            a50 += m0.Y * p0.X + m1.Y * p0.Y + m2.Y * p0.Z + m3.Y * p1.X + m4.Y * p1.Y + m5.Y * p1.Z + m6.Y * p2.X + m7.Y * p2.Y + m8.Y * p2.Z;
            a51 += m0.Y * p0.Y + m1.Y * p0.Z + m2.Y * p0.W + m3.Y * p1.Y + m4.Y * p1.Z + m5.Y * p1.W + m6.Y * p2.Y + m7.Y * p2.Z + m8.Y * p2.W;
            a52 += m0.Y * p0.Z + m1.Y * p0.W + m2.Y * q0.X + m3.Y * p1.Z + m4.Y * p1.W + m5.Y * q1.X + m6.Y * p2.Z + m7.Y * p2.W + m8.Y * q2.X;
            a53 += m0.Y * p0.W + m1.Y * q0.X + m2.Y * q0.Y + m3.Y * p1.W + m4.Y * q1.X + m5.Y * q1.Y + m6.Y * p2.W + m7.Y * q2.X + m8.Y * q2.Y;
            a60 += m0.Z * p0.X + m1.Z * p0.Y + m2.Z * p0.Z + m3.Z * p1.X + m4.Z * p1.Y + m5.Z * p1.Z + m6.Z * p2.X + m7.Z * p2.Y + m8.Z * p2.Z;
            a61 += m0.Z * p0.Y + m1.Z * p0.Z + m2.Z * p0.W + m3.Z * p1.Y + m4.Z * p1.Z + m5.Z * p1.W + m6.Z * p2.Y + m7.Z * p2.Z + m8.Z * p2.W;
            a62 += m0.Z * p0.Z + m1.Z * p0.W + m2.Z * q0.X + m3.Z * p1.Z + m4.Z * p1.W + m5.Z * q1.X + m6.Z * p2.Z + m7.Z * p2.W + m8.Z * q2.X;
            a63 += m0.Z * p0.W + m1.Z * q0.X + m2.Z * q0.Y + m3.Z * p1.W + m4.Z * q1.X + m5.Z * q1.Y + m6.Z * p2.W + m7.Z * q2.X + m8.Z * q2.Y;
            a70 += m0.W * p0.X + m1.W * p0.Y + m2.W * p0.Z + m3.W * p1.X + m4.W * p1.Y + m5.W * p1.Z + m6.W * p2.X + m7.W * p2.Y + m8.W * p2.Z;
            a71 += m0.W * p0.Y + m1.W * p0.Z + m2.W * p0.W + m3.W * p1.Y + m4.W * p1.Z + m5.W * p1.W + m6.W * p2.Y + m7.W * p2.Z + m8.W * p2.W;
            a72 += m0.W * p0.Z + m1.W * p0.W + m2.W * q0.X + m3.W * p1.Z + m4.W * p1.W + m5.W * q1.X + m6.W * p2.Z + m7.W * p2.W + m8.W * q2.X;
            a73 += m0.W * p0.W + m1.W * q0.X + m2.W * q0.Y + m3.W * p1.W + m4.W * q1.X + m5.W * q1.Y + m6.W * p2.W + m7.W * q2.X + m8.W * q2.Y;
        }
        StoreBlock(y, bias, g, n, 2 * cb, oy, xb * 4, a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33);
        if (8 * cb + 4 < g.Cout)
            StoreBlock(y, bias, g, n, 2 * cb + 1, oy, xb * 4, a40, a41, a42, a43, a50, a51, a52, a53, a60, a61, a62, a63, a70, a71, a72, a73);
    }

    // xp [N,Cin,Hp,Wp4] Float4 (zero-padded x), wp [CoB,Cin,9] Float4 -> y [N,Cout,Ho,Wo]
    // y[n,co,oy,ox] = b[co] + Σ_ci Σ_{ky,kx<3} w[co,ci,ky,kx]·xp[n,ci,2·oy+ky,2·ox+kx]
    // Thread: 4 output channels × 4 consecutive pixels; per input channel 3 rows × 3 Float4 (9 of the 12 used).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Forward3x3S2BlockedKernel(Index1D index, ArrayView<Float4> xp, ArrayView<Float4> wp, ArrayView<float> bias, ArrayView<float> y, Blocked g)
    {
        int t = index;
        int xb = t % g.XB; t /= g.XB;
        int oy = t % g.Ho; t /= g.Ho;
        int cb = t % g.CoB;
        int n = t / g.CoB;
        float a00 = 0f, a01 = 0f, a02 = 0f, a03 = 0f, a10 = 0f, a11 = 0f, a12 = 0f, a13 = 0f;
        float a20 = 0f, a21 = 0f, a22 = 0f, a23 = 0f, a30 = 0f, a31 = 0f, a32 = 0f, a33 = 0f;
        int row = (n * g.Cin * g.Hp + 2 * oy) * g.Wp4 + 2 * xb;
        int plane = g.Hp * g.Wp4;
        int wi = cb * g.Cin * 9;
        for (int ci = 0; ci < g.Cin; ci++, row += plane, wi += 9)
        {
            int r1 = row + g.Wp4, r2 = row + 2 * g.Wp4;
            Float4 p0 = xp[row], q0 = xp[row + 1], u0 = xp[row + 2];
            Float4 p1 = xp[r1], q1 = xp[r1 + 1], u1 = xp[r1 + 2];
            Float4 p2 = xp[r2], q2 = xp[r2 + 1], u2 = xp[r2 + 2];
            Float4 k0 = wp[wi], k1 = wp[wi + 1], k2 = wp[wi + 2], k3 = wp[wi + 3], k4 = wp[wi + 4];
            Float4 k5 = wp[wi + 5], k6 = wp[wi + 6], k7 = wp[wi + 7], k8 = wp[wi + 8];
            a00 += k0.X * p0.X + k1.X * p0.Y + k2.X * p0.Z + k3.X * p1.X + k4.X * p1.Y + k5.X * p1.Z + k6.X * p2.X + k7.X * p2.Y + k8.X * p2.Z;
            a01 += k0.X * p0.Z + k1.X * p0.W + k2.X * q0.X + k3.X * p1.Z + k4.X * p1.W + k5.X * q1.X + k6.X * p2.Z + k7.X * p2.W + k8.X * q2.X;
            a02 += k0.X * q0.X + k1.X * q0.Y + k2.X * q0.Z + k3.X * q1.X + k4.X * q1.Y + k5.X * q1.Z + k6.X * q2.X + k7.X * q2.Y + k8.X * q2.Z;
            a03 += k0.X * q0.Z + k1.X * q0.W + k2.X * u0.X + k3.X * q1.Z + k4.X * q1.W + k5.X * u1.X + k6.X * q2.Z + k7.X * q2.W + k8.X * u2.X;
            a10 += k0.Y * p0.X + k1.Y * p0.Y + k2.Y * p0.Z + k3.Y * p1.X + k4.Y * p1.Y + k5.Y * p1.Z + k6.Y * p2.X + k7.Y * p2.Y + k8.Y * p2.Z;
            a11 += k0.Y * p0.Z + k1.Y * p0.W + k2.Y * q0.X + k3.Y * p1.Z + k4.Y * p1.W + k5.Y * q1.X + k6.Y * p2.Z + k7.Y * p2.W + k8.Y * q2.X;
            a12 += k0.Y * q0.X + k1.Y * q0.Y + k2.Y * q0.Z + k3.Y * q1.X + k4.Y * q1.Y + k5.Y * q1.Z + k6.Y * q2.X + k7.Y * q2.Y + k8.Y * q2.Z;
            a13 += k0.Y * q0.Z + k1.Y * q0.W + k2.Y * u0.X + k3.Y * q1.Z + k4.Y * q1.W + k5.Y * u1.X + k6.Y * q2.Z + k7.Y * q2.W + k8.Y * u2.X;
            a20 += k0.Z * p0.X + k1.Z * p0.Y + k2.Z * p0.Z + k3.Z * p1.X + k4.Z * p1.Y + k5.Z * p1.Z + k6.Z * p2.X + k7.Z * p2.Y + k8.Z * p2.Z;
            a21 += k0.Z * p0.Z + k1.Z * p0.W + k2.Z * q0.X + k3.Z * p1.Z + k4.Z * p1.W + k5.Z * q1.X + k6.Z * p2.Z + k7.Z * p2.W + k8.Z * q2.X;
            a22 += k0.Z * q0.X + k1.Z * q0.Y + k2.Z * q0.Z + k3.Z * q1.X + k4.Z * q1.Y + k5.Z * q1.Z + k6.Z * q2.X + k7.Z * q2.Y + k8.Z * q2.Z;
            a23 += k0.Z * q0.Z + k1.Z * q0.W + k2.Z * u0.X + k3.Z * q1.Z + k4.Z * q1.W + k5.Z * u1.X + k6.Z * q2.Z + k7.Z * q2.W + k8.Z * u2.X;
            a30 += k0.W * p0.X + k1.W * p0.Y + k2.W * p0.Z + k3.W * p1.X + k4.W * p1.Y + k5.W * p1.Z + k6.W * p2.X + k7.W * p2.Y + k8.W * p2.Z;
            a31 += k0.W * p0.Z + k1.W * p0.W + k2.W * q0.X + k3.W * p1.Z + k4.W * p1.W + k5.W * q1.X + k6.W * p2.Z + k7.W * p2.W + k8.W * q2.X;
            a32 += k0.W * q0.X + k1.W * q0.Y + k2.W * q0.Z + k3.W * q1.X + k4.W * q1.Y + k5.W * q1.Z + k6.W * q2.X + k7.W * q2.Y + k8.W * q2.Z;
            a33 += k0.W * q0.Z + k1.W * q0.W + k2.W * u0.X + k3.W * q1.Z + k4.W * q1.W + k5.W * u1.X + k6.W * q2.Z + k7.W * q2.W + k8.W * u2.X;
        }
        StoreBlock(y, bias, g, n, cb, oy, xb * 4, a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33);
    }

    // xp [N,Cin(padded to 4),1,P] Float4, wp [CoB,Cin,1] Float4 -> y [N,Cout,P] (P = H·W flattened)
    // y[n,co,p] = b[co] + Σ_ci w[co,ci]·x[n,ci,p]
    // Thread: 4 output channels × 8 consecutive pixels; per 4 input channels 8 Float4 of x and 4 of weights,
    // then a 4-term dot product into each of the 32 sums. 128 multiply-adds per 12 loads.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Forward1x1BlockedKernel(Index1D index, ArrayView<Float4> xp, ArrayView<Float4> wp, ArrayView<float> bias, ArrayView<float> y, Blocked g)
    {
        int t = index;
        int xb = t % g.XB; t /= g.XB;
        int cb = t % g.CoB;
        int n = t / g.CoB;
        float a00 = 0f, a01 = 0f, a02 = 0f, a03 = 0f, a04 = 0f, a05 = 0f, a06 = 0f, a07 = 0f;
        float a10 = 0f, a11 = 0f, a12 = 0f, a13 = 0f, a14 = 0f, a15 = 0f, a16 = 0f, a17 = 0f;
        float a20 = 0f, a21 = 0f, a22 = 0f, a23 = 0f, a24 = 0f, a25 = 0f, a26 = 0f, a27 = 0f;
        float a30 = 0f, a31 = 0f, a32 = 0f, a33 = 0f, a34 = 0f, a35 = 0f, a36 = 0f, a37 = 0f;
        int row = n * g.Cin * g.Wp4 + 2 * xb;
        int wi = cb * g.Cin;
        for (int ci = 0; ci < g.Cin; ci += 4, row += 4 * g.Wp4, wi += 4)
        {
            Float4 p0 = xp[row], q0 = xp[row + 1];
            Float4 p1 = xp[row + g.Wp4], q1 = xp[row + g.Wp4 + 1];
            Float4 p2 = xp[row + 2 * g.Wp4], q2 = xp[row + 2 * g.Wp4 + 1];
            Float4 p3 = xp[row + 3 * g.Wp4], q3 = xp[row + 3 * g.Wp4 + 1];
            Float4 k0 = wp[wi], k1 = wp[wi + 1], k2 = wp[wi + 2], k3 = wp[wi + 3];
            a00 += k0.X * p0.X + k1.X * p1.X + k2.X * p2.X + k3.X * p3.X;
            a01 += k0.X * p0.Y + k1.X * p1.Y + k2.X * p2.Y + k3.X * p3.Y;
            a02 += k0.X * p0.Z + k1.X * p1.Z + k2.X * p2.Z + k3.X * p3.Z;
            a03 += k0.X * p0.W + k1.X * p1.W + k2.X * p2.W + k3.X * p3.W;
            a04 += k0.X * q0.X + k1.X * q1.X + k2.X * q2.X + k3.X * q3.X;
            a05 += k0.X * q0.Y + k1.X * q1.Y + k2.X * q2.Y + k3.X * q3.Y;
            a06 += k0.X * q0.Z + k1.X * q1.Z + k2.X * q2.Z + k3.X * q3.Z;
            a07 += k0.X * q0.W + k1.X * q1.W + k2.X * q2.W + k3.X * q3.W;
            a10 += k0.Y * p0.X + k1.Y * p1.X + k2.Y * p2.X + k3.Y * p3.X;
            a11 += k0.Y * p0.Y + k1.Y * p1.Y + k2.Y * p2.Y + k3.Y * p3.Y;
            a12 += k0.Y * p0.Z + k1.Y * p1.Z + k2.Y * p2.Z + k3.Y * p3.Z;
            a13 += k0.Y * p0.W + k1.Y * p1.W + k2.Y * p2.W + k3.Y * p3.W;
            a14 += k0.Y * q0.X + k1.Y * q1.X + k2.Y * q2.X + k3.Y * q3.X;
            a15 += k0.Y * q0.Y + k1.Y * q1.Y + k2.Y * q2.Y + k3.Y * q3.Y;
            a16 += k0.Y * q0.Z + k1.Y * q1.Z + k2.Y * q2.Z + k3.Y * q3.Z;
            a17 += k0.Y * q0.W + k1.Y * q1.W + k2.Y * q2.W + k3.Y * q3.W;
            a20 += k0.Z * p0.X + k1.Z * p1.X + k2.Z * p2.X + k3.Z * p3.X;
            a21 += k0.Z * p0.Y + k1.Z * p1.Y + k2.Z * p2.Y + k3.Z * p3.Y;
            a22 += k0.Z * p0.Z + k1.Z * p1.Z + k2.Z * p2.Z + k3.Z * p3.Z;
            a23 += k0.Z * p0.W + k1.Z * p1.W + k2.Z * p2.W + k3.Z * p3.W;
            a24 += k0.Z * q0.X + k1.Z * q1.X + k2.Z * q2.X + k3.Z * q3.X;
            a25 += k0.Z * q0.Y + k1.Z * q1.Y + k2.Z * q2.Y + k3.Z * q3.Y;
            a26 += k0.Z * q0.Z + k1.Z * q1.Z + k2.Z * q2.Z + k3.Z * q3.Z;
            a27 += k0.Z * q0.W + k1.Z * q1.W + k2.Z * q2.W + k3.Z * q3.W;
            a30 += k0.W * p0.X + k1.W * p1.X + k2.W * p2.X + k3.W * p3.X;
            a31 += k0.W * p0.Y + k1.W * p1.Y + k2.W * p2.Y + k3.W * p3.Y;
            a32 += k0.W * p0.Z + k1.W * p1.Z + k2.W * p2.Z + k3.W * p3.Z;
            a33 += k0.W * p0.W + k1.W * p1.W + k2.W * p2.W + k3.W * p3.W;
            a34 += k0.W * q0.X + k1.W * q1.X + k2.W * q2.X + k3.W * q3.X;
            a35 += k0.W * q0.Y + k1.W * q1.Y + k2.W * q2.Y + k3.W * q3.Y;
            a36 += k0.W * q0.Z + k1.W * q1.Z + k2.W * q2.Z + k3.W * q3.Z;
            a37 += k0.W * q0.W + k1.W * q1.W + k2.W * q2.W + k3.W * q3.W;
        }
        int px = 8 * xb;
        StoreBlock(y, bias, g, n, cb, 0, px, a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33);
        if (px + 4 < g.Wo)
            StoreBlock(y, bias, g, n, cb, 0, px + 4, a04, a05, a06, a07, a14, a15, a16, a17, a24, a25, a26, a27, a34, a35, a36, a37);
    }

    /// <summary>Writes (or adds) a 4-channel × 4-pixel block at row oy, columns ox0.., skipping what lies outside.</summary>
    private static void StoreBlock(ArrayView<float> y, ArrayView<float> bias, Blocked g, int n, int cb, int oy, int ox0,
        float a00, float a01, float a02, float a03, float a10, float a11, float a12, float a13,
        float a20, float a21, float a22, float a23, float a30, float a31, float a32, float a33)
    {
        int co = 4 * cb;
        int count = Math.Min(4, g.Wo - ox0);
        int plane = g.Ho * g.Wo;
        int at = ((n * g.Cout + co) * g.Ho + oy) * g.Wo + ox0;
        StoreRow(y, bias, g, co, at, count, a00, a01, a02, a03);
        if (co + 1 < g.Cout) StoreRow(y, bias, g, co + 1, at + plane, count, a10, a11, a12, a13);
        if (co + 2 < g.Cout) StoreRow(y, bias, g, co + 2, at + 2 * plane, count, a20, a21, a22, a23);
        if (co + 3 < g.Cout) StoreRow(y, bias, g, co + 3, at + 3 * plane, count, a30, a31, a32, a33);
    }

    private static void StoreRow(ArrayView<float> y, ArrayView<float> bias, Blocked g, int co, int at, int count, float v0, float v1, float v2, float v3)
    {
        if (g.Accumulate != 0)
        {
            y[at] += v0;
            if (count > 1) y[at + 1] += v1;
            if (count > 2) y[at + 2] += v2;
            if (count > 3) y[at + 3] += v3;
            return;
        }
        float b = g.HasBias != 0 ? bias[co] : 0f;
        y[at] = v0 + b;
        if (count > 1) y[at + 1] = v1 + b;
        if (count > 2) y[at + 2] = v2 + b;
        if (count > 3) y[at + 3] = v3 + b;
    }

    // =====================================================================================================
    // Weight gradient (blocked)
    // =====================================================================================================

    // xp [N,Cin,Hp,Wp4] Float4 (zero-padded x), dyp [N,CoutP,Ho,XB] Float4 (dy, rows padded with zeros to
    // whole Float4s) -> dw [Cout,Cin,3,3]:  dw[co,ci,ky,kx] += Σ_{n,oy,ox} dy[n,co,oy,ox]·xp[n,ci,oy+ky,ox+kx]
    // Thread: 4 output channels × one input channel × all 9 taps (36 sums). Per 4 pixels of a row: 4 Float4
    // of dy, 3 rows × 2 Float4 of x, and a 4-term dot product into each sum. 144 multiply-adds per 10 loads.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void WeightGrad3x3S1BlockedKernel(Index1D index, ArrayView<Float4> xp, ArrayView<Float4> dyp, ArrayView<float> dw, Blocked g)
    {
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
        StoreTaps(dw, g, cb, ci, s000, s001, s002, s010, s011, s012, s020, s021, s022,
                                 s100, s101, s102, s110, s111, s112, s120, s121, s122,
                                 s200, s201, s202, s210, s211, s212, s220, s221, s222,
                                 s300, s301, s302, s310, s311, s312, s320, s321, s322);
    }

    // As above for stride 2: dw[co,ci,ky,kx] += Σ dy[n,co,oy,ox]·xp[n,ci,2·oy+ky,2·ox+kx]; 3 Float4 per x row.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void WeightGrad3x3S2BlockedKernel(Index1D index, ArrayView<Float4> xp, ArrayView<Float4> dyp, ArrayView<float> dw, Blocked g)
    {
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
                int xr = ((n * g.Cin + ci) * g.Hp + 2 * oy) * g.Wp4;
                int dr = ((n * g.CoutP + 4 * cb) * g.Ho + oy) * g.XB;
                for (int xb = 0; xb < g.XB; xb++)
                {
                    Float4 d0 = dyp[dr + xb], d1 = dyp[dr + dyPlane + xb], d2 = dyp[dr + 2 * dyPlane + xb], d3 = dyp[dr + 3 * dyPlane + xb];
                    int r0 = xr + 2 * xb, r1 = r0 + g.Wp4, r2 = r1 + g.Wp4;
                    Float4 p0 = xp[r0], q0 = xp[r0 + 1], u0 = xp[r0 + 2];
                    Float4 p1 = xp[r1], q1 = xp[r1 + 1], u1 = xp[r1 + 2];
                    Float4 p2 = xp[r2], q2 = xp[r2 + 1], u2 = xp[r2 + 2];
                s000 += d0.X * p0.X + d0.Y * p0.Z + d0.Z * q0.X + d0.W * q0.Z;
                s001 += d0.X * p0.Y + d0.Y * p0.W + d0.Z * q0.Y + d0.W * q0.W;
                s002 += d0.X * p0.Z + d0.Y * q0.X + d0.Z * q0.Z + d0.W * u0.X;
                s010 += d0.X * p1.X + d0.Y * p1.Z + d0.Z * q1.X + d0.W * q1.Z;
                s011 += d0.X * p1.Y + d0.Y * p1.W + d0.Z * q1.Y + d0.W * q1.W;
                s012 += d0.X * p1.Z + d0.Y * q1.X + d0.Z * q1.Z + d0.W * u1.X;
                s020 += d0.X * p2.X + d0.Y * p2.Z + d0.Z * q2.X + d0.W * q2.Z;
                s021 += d0.X * p2.Y + d0.Y * p2.W + d0.Z * q2.Y + d0.W * q2.W;
                s022 += d0.X * p2.Z + d0.Y * q2.X + d0.Z * q2.Z + d0.W * u2.X;
                s100 += d1.X * p0.X + d1.Y * p0.Z + d1.Z * q0.X + d1.W * q0.Z;
                s101 += d1.X * p0.Y + d1.Y * p0.W + d1.Z * q0.Y + d1.W * q0.W;
                s102 += d1.X * p0.Z + d1.Y * q0.X + d1.Z * q0.Z + d1.W * u0.X;
                s110 += d1.X * p1.X + d1.Y * p1.Z + d1.Z * q1.X + d1.W * q1.Z;
                s111 += d1.X * p1.Y + d1.Y * p1.W + d1.Z * q1.Y + d1.W * q1.W;
                s112 += d1.X * p1.Z + d1.Y * q1.X + d1.Z * q1.Z + d1.W * u1.X;
                s120 += d1.X * p2.X + d1.Y * p2.Z + d1.Z * q2.X + d1.W * q2.Z;
                s121 += d1.X * p2.Y + d1.Y * p2.W + d1.Z * q2.Y + d1.W * q2.W;
                s122 += d1.X * p2.Z + d1.Y * q2.X + d1.Z * q2.Z + d1.W * u2.X;
                s200 += d2.X * p0.X + d2.Y * p0.Z + d2.Z * q0.X + d2.W * q0.Z;
                s201 += d2.X * p0.Y + d2.Y * p0.W + d2.Z * q0.Y + d2.W * q0.W;
                s202 += d2.X * p0.Z + d2.Y * q0.X + d2.Z * q0.Z + d2.W * u0.X;
                s210 += d2.X * p1.X + d2.Y * p1.Z + d2.Z * q1.X + d2.W * q1.Z;
                s211 += d2.X * p1.Y + d2.Y * p1.W + d2.Z * q1.Y + d2.W * q1.W;
                s212 += d2.X * p1.Z + d2.Y * q1.X + d2.Z * q1.Z + d2.W * u1.X;
                s220 += d2.X * p2.X + d2.Y * p2.Z + d2.Z * q2.X + d2.W * q2.Z;
                s221 += d2.X * p2.Y + d2.Y * p2.W + d2.Z * q2.Y + d2.W * q2.W;
                s222 += d2.X * p2.Z + d2.Y * q2.X + d2.Z * q2.Z + d2.W * u2.X;
                s300 += d3.X * p0.X + d3.Y * p0.Z + d3.Z * q0.X + d3.W * q0.Z;
                s301 += d3.X * p0.Y + d3.Y * p0.W + d3.Z * q0.Y + d3.W * q0.W;
                s302 += d3.X * p0.Z + d3.Y * q0.X + d3.Z * q0.Z + d3.W * u0.X;
                s310 += d3.X * p1.X + d3.Y * p1.Z + d3.Z * q1.X + d3.W * q1.Z;
                s311 += d3.X * p1.Y + d3.Y * p1.W + d3.Z * q1.Y + d3.W * q1.W;
                s312 += d3.X * p1.Z + d3.Y * q1.X + d3.Z * q1.Z + d3.W * u1.X;
                s320 += d3.X * p2.X + d3.Y * p2.Z + d3.Z * q2.X + d3.W * q2.Z;
                s321 += d3.X * p2.Y + d3.Y * p2.W + d3.Z * q2.Y + d3.W * q2.W;
                s322 += d3.X * p2.Z + d3.Y * q2.X + d3.Z * q2.Z + d3.W * u2.X;
                }
            }
        }
        StoreTaps(dw, g, cb, ci, s000, s001, s002, s010, s011, s012, s020, s021, s022,
                                 s100, s101, s102, s110, s111, s112, s120, s121, s122,
                                 s200, s201, s202, s210, s211, s212, s220, s221, s222,
                                 s300, s301, s302, s310, s311, s312, s320, s321, s322);
    }

    private static void StoreTaps(ArrayView<float> dw, Blocked g, int cb, int ci,
        float s000, float s001, float s002, float s010, float s011, float s012, float s020, float s021, float s022,
        float s100, float s101, float s102, float s110, float s111, float s112, float s120, float s121, float s122,
        float s200, float s201, float s202, float s210, float s211, float s212, float s220, float s221, float s222,
        float s300, float s301, float s302, float s310, float s311, float s312, float s320, float s321, float s322)
    {
        int co = 4 * cb;
        int at = (co * g.Ci + ci) * 9, channel = g.Ci * 9;
        AddTaps(dw, at, s000, s001, s002, s010, s011, s012, s020, s021, s022);
        if (co + 1 < g.Cout) AddTaps(dw, at + channel, s100, s101, s102, s110, s111, s112, s120, s121, s122);
        if (co + 2 < g.Cout) AddTaps(dw, at + 2 * channel, s200, s201, s202, s210, s211, s212, s220, s221, s222);
        if (co + 3 < g.Cout) AddTaps(dw, at + 3 * channel, s300, s301, s302, s310, s311, s312, s320, s321, s322);
    }

    private static void AddTaps(ArrayView<float> dw, int at, float t0, float t1, float t2, float t3, float t4, float t5, float t6, float t7, float t8)
    {
        dw[at] += t0; dw[at + 1] += t1; dw[at + 2] += t2;
        dw[at + 3] += t3; dw[at + 4] += t4; dw[at + 5] += t5;
        dw[at + 6] += t6; dw[at + 7] += t7; dw[at + 8] += t8;
    }

    // xp [N,Cin(padded to 4),P4] Float4, dyp [N,CoutP,P4] Float4 (P = H·W flattened, zero tail) -> dw [Cout,Cin]
    // dw[co,ci] += Σ_{n,p} dy[n,co,p]·x[n,ci,p]
    // Thread: 4 output × 4 input channels (16 sums); per 4 pixels 4 + 4 Float4 and a 4-term dot product per sum.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void WeightGrad1x1BlockedKernel(Index1D index, ArrayView<Float4> xp, ArrayView<Float4> dyp, ArrayView<float> dw, Blocked g)
    {
        int cib = index % g.CiB;
        int cb = index / g.CiB;
        float s00 = 0f, s01 = 0f, s02 = 0f, s03 = 0f, s10 = 0f, s11 = 0f, s12 = 0f, s13 = 0f;
        float s20 = 0f, s21 = 0f, s22 = 0f, s23 = 0f, s30 = 0f, s31 = 0f, s32 = 0f, s33 = 0f;
        int p4 = g.Wp4;
        for (int n = 0; n < g.N; n++)
        {
            int xr = (n * g.Cin + 4 * cib) * p4;
            int dr = (n * g.CoutP + 4 * cb) * p4;
            for (int j = 0; j < p4; j++)
            {
                Float4 d0 = dyp[dr + j], d1 = dyp[dr + p4 + j], d2 = dyp[dr + 2 * p4 + j], d3 = dyp[dr + 3 * p4 + j];
                Float4 x0 = xp[xr + j], x1 = xp[xr + p4 + j], x2 = xp[xr + 2 * p4 + j], x3 = xp[xr + 3 * p4 + j];
                s00 += d0.X * x0.X + d0.Y * x0.Y + d0.Z * x0.Z + d0.W * x0.W;
                s01 += d0.X * x1.X + d0.Y * x1.Y + d0.Z * x1.Z + d0.W * x1.W;
                s02 += d0.X * x2.X + d0.Y * x2.Y + d0.Z * x2.Z + d0.W * x2.W;
                s03 += d0.X * x3.X + d0.Y * x3.Y + d0.Z * x3.Z + d0.W * x3.W;
                s10 += d1.X * x0.X + d1.Y * x0.Y + d1.Z * x0.Z + d1.W * x0.W;
                s11 += d1.X * x1.X + d1.Y * x1.Y + d1.Z * x1.Z + d1.W * x1.W;
                s12 += d1.X * x2.X + d1.Y * x2.Y + d1.Z * x2.Z + d1.W * x2.W;
                s13 += d1.X * x3.X + d1.Y * x3.Y + d1.Z * x3.Z + d1.W * x3.W;
                s20 += d2.X * x0.X + d2.Y * x0.Y + d2.Z * x0.Z + d2.W * x0.W;
                s21 += d2.X * x1.X + d2.Y * x1.Y + d2.Z * x1.Z + d2.W * x1.W;
                s22 += d2.X * x2.X + d2.Y * x2.Y + d2.Z * x2.Z + d2.W * x2.W;
                s23 += d2.X * x3.X + d2.Y * x3.Y + d2.Z * x3.Z + d2.W * x3.W;
                s30 += d3.X * x0.X + d3.Y * x0.Y + d3.Z * x0.Z + d3.W * x0.W;
                s31 += d3.X * x1.X + d3.Y * x1.Y + d3.Z * x1.Z + d3.W * x1.W;
                s32 += d3.X * x2.X + d3.Y * x2.Y + d3.Z * x2.Z + d3.W * x2.W;
                s33 += d3.X * x3.X + d3.Y * x3.Y + d3.Z * x3.Z + d3.W * x3.W;
            }
        }
        int co = 4 * cb, ci = 4 * cib;
        AddRow(dw, g, co, ci, s00, s01, s02, s03);
        if (co + 1 < g.Cout) AddRow(dw, g, co + 1, ci, s10, s11, s12, s13);
        if (co + 2 < g.Cout) AddRow(dw, g, co + 2, ci, s20, s21, s22, s23);
        if (co + 3 < g.Cout) AddRow(dw, g, co + 3, ci, s30, s31, s32, s33);
    }

    private static void AddRow(ArrayView<float> dw, Blocked g, int co, int ci, float v0, float v1, float v2, float v3)
    {
        int at = co * g.Ci + ci;
        dw[at] += v0;
        if (ci + 1 < g.Ci) dw[at + 1] += v1;
        if (ci + 2 < g.Ci) dw[at + 2] += v2;
        if (ci + 3 < g.Ci) dw[at + 3] += v3;
    }

}
