using ILGPU;
using ILGPU.Runtime;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Reduce;

namespace IlgpuDdpm.Kernels.Norm;

/// <summary>
/// The dimensions of a group normalisation: x [N, C, S] (S = product of the spatial dimensions),
/// <see cref="Groups"/> groups of <see cref="ChannelsPerGroup"/> consecutive channels.
/// </summary>
public readonly struct GroupNormDims
{
    /// <summary>Checks and stores the dimensions; throws <see cref="ArgumentException"/> on a bad combination.</summary>
    public GroupNormDims(int n, int channels, int groups, int spatial)
    {
        if (n <= 0 || channels <= 0 || groups <= 0 || spatial <= 0)
            throw new ArgumentException($"group norm: N, C, groups and spatial size must be positive, got N={n}, C={channels}, groups={groups}, S={spatial}");
        if (channels % groups != 0)
            throw new ArgumentException($"group norm: channels ({channels}) must be divisible by groups ({groups})");
        if ((long)n * channels * spatial > int.MaxValue)
            throw new ArgumentException($"group norm: N·C·S = {(long)n * channels * spatial} exceeds 2^31 − 1 (32-bit indices)");
        N = n;
        C = channels;
        Groups = groups;
        Spatial = spatial;
    }

    /// <summary>Batch size.</summary>
    public int N { get; }

    /// <summary>Channels.</summary>
    public int C { get; }

    /// <summary>Groups G (C divisible by G).</summary>
    public int Groups { get; }

    /// <summary>Spatial size S (H·W, or 1 for [N, C] inputs).</summary>
    public int Spatial { get; }

    /// <summary>C / G.</summary>
    public int ChannelsPerGroup => C / Groups;

    /// <summary>M = C/G · S: the number of values one mean and variance are taken over.</summary>
    public int GroupSize => C / Groups * Spatial;

    /// <summary>N · C · S.</summary>
    public int Length => N * C * Spatial;

    /// <summary>N · G: the number of (n, g) statistics.</summary>
    public int StatCount => N * Groups;

    /// <inheritdoc/>
    public override string ToString() => $"N={N}, C={C}, G={Groups}, S={Spatial}";
}

/// <summary>
/// Group normalisation (Wu &amp; He 2018) forward and backward. Channels c of group g = c / (C/G) are
/// consecutive, so the M = C/G·S values of one (n, g) form one contiguous row of x: row r = n·G + g.
/// Statistics are reductions over rows, done deterministically (fixed order, no atomics) in two
/// variants — one thread per row looping (CPU accelerator) or one group per row with a fixed shared-memory
/// tree (GPUs); see <see cref="ReductionVariant"/>.
/// </summary>
public sealed class NormKernels : IKernelFamily<NormKernels>
{
    private readonly ComputeDevice device;
    private readonly int treeWidth;

    private NormKernels(ComputeDevice device)
    {
        this.device = device;
        var acc = device.Accelerator;
        treeWidth = ReduceKernels.TreeWidthFor(acc, ReduceKernels.MaxTreeWidth);
    }

    /// <inheritdoc/>
    public static NormKernels Create(ComputeDevice device) => new(device);

    // =============================================================================================
    // Forward
    //   x [N,C,S], gamma [C], beta [C] -> y [N,C,S], mean [N,G], rstd [N,G]
    //   μ = (1/M) Σ x,  σ² = (1/M) Σ (x − μ)²  (biased, two passes: no E[x²] − E[x]² cancellation),
    //   rstd = 1/√(σ² + eps),  y = (x − μ)·rstd·γ[c] + β[c].

    // Row statistics, one thread per row r (= n·G + g) of m contiguous values: pass 1 the mean, pass 2
    // the centred sum of squares, each with 4 interleaved accumulators combined as (s0+s1)+(s2+s3).
    internal readonly struct RowStatsLoopKernel(ArrayView<float> x, ArrayView<float> mean, ArrayView<float> rstd, int m, float eps) : IThreadKernel
    {
        public void Execute(int r)
        {
            int start = r * m;
            int end = start + m;
            float s0 = 0f, s1 = 0f, s2 = 0f, s3 = 0f;
            int i = start;
            for (; i + 4 <= end; i += 4)
            {
                s0 += x[i];
                s1 += x[i + 1];
                s2 += x[i + 2];
                s3 += x[i + 3];
            }
            for (; i < end; i++) s0 += x[i];
            float mu = ((s0 + s1) + (s2 + s3)) / m;

            s0 = 0f; s1 = 0f; s2 = 0f; s3 = 0f;
            i = start;
            for (; i + 4 <= end; i += 4)
            {
                float d0 = x[i] - mu, d1 = x[i + 1] - mu, d2 = x[i + 2] - mu, d3 = x[i + 3] - mu;
                s0 += d0 * d0;
                s1 += d1 * d1;
                s2 += d2 * d2;
                s3 += d3 * d3;
            }
            for (; i < end; i++)
            {
                float d = x[i] - mu;
                s0 += d * d;
            }
            float variance = ((s0 + s1) + (s2 + s3)) / m;
            mean[r] = mu;
            rstd[r] = 1f / MathF.Sqrt(variance + eps);
        }
    }

    // Row statistics, one group per row (grid = N·G): strided per-thread sums (coalesced), the fixed
    // shared-memory tree for the mean, then again for the centred sum of squares.
    internal readonly struct RowStatsTreeKernel(ArrayView<float> x, ArrayView<float> mean, ArrayView<float> rstd, int m, float eps) : IGroupKernel
    {
        public void Execute()
        {
            var shared = SharedMemory.Allocate<float>(ReduceKernels.MaxTreeWidth);
            int r = Grid.IdxX;
            int start = r * m;
            int end = start + m;
            float s = 0f;
            for (int i = start + Group.IdxX; i < end; i += Group.DimX) s += x[i];
            float mu = ReduceKernels.GroupTreeSum(shared, s) / m;
            float q = 0f;
            for (int i = start + Group.IdxX; i < end; i += Group.DimX)
            {
                float d = x[i] - mu;
                q += d * d;
            }
            float variance = ReduceKernels.GroupTreeSum(shared, q) / m;
            if (Group.IdxX == 0)
            {
                mean[r] = mu;
                rstd[r] = 1f / MathF.Sqrt(variance + eps);
            }
        }
    }

    // Normalise and scale, thread t handles elements [t·chunk, (t+1)·chunk): row r = i / M, channel c = (i / S) mod C.
    internal readonly struct GroupNormForwardKernel(ArrayView<float> x, ArrayView<float> gamma, ArrayView<float> beta, ArrayView<float> mean, ArrayView<float> rstd, ArrayView<float> y, GroupNormDims d, int chunk) : IThreadKernel
    {
        public void Execute(int t)
        {
            int start = t * chunk;
            int end = Math.Min(start + chunk, d.Length);
            int m = d.GroupSize, s = d.Spatial, c = d.C;
            for (int i = start; i < end; i++)
            {
                int r = i / m;
                int ch = i / s % c;
                y[i] = (x[i] - mean[r]) * rstd[r] * gamma[ch] + beta[ch];
            }
        }
    }

    /// <summary>
    /// x [N,C,S], gamma [C], beta [C] -> y [N,C,S]; also writes mean [N·G] and rstd [N·G] = 1/√(σ²+eps)
    /// for <see cref="Backward"/>. σ² is the biased variance over the C/G·S values of each (n, g).
    /// </summary>
    public void Forward(ArrayView<float> x, ArrayView<float> gamma, ArrayView<float> beta, ArrayView<float> y,
        ArrayView<float> mean, ArrayView<float> rstd, GroupNormDims dims, float eps = 1e-5f, ReductionVariant variant = ReductionVariant.Auto) =>
        Forward(x, gamma, beta, y, mean, rstd, dims, eps, variant, treeWidth);

    /// <summary><see cref="Forward(ArrayView{float}, ArrayView{float}, ArrayView{float}, ArrayView{float}, ArrayView{float}, ArrayView{float}, GroupNormDims, float, ReductionVariant)"/> with the tree variant's group width capped at <paramref name="maxTreeWidth"/> (a power of two; tests use small ones: barriers are slow on the CPU accelerator).</summary>
    internal void Forward(ArrayView<float> x, ArrayView<float> gamma, ArrayView<float> beta, ArrayView<float> y,
        ArrayView<float> mean, ArrayView<float> rstd, GroupNormDims dims, float eps, ReductionVariant variant, int maxTreeWidth)
    {
        CheckTreeWidth(maxTreeWidth);
        Expect(x, dims.Length, "x", dims);
        Expect(y, dims.Length, "y", dims);
        Expect(gamma, dims.C, "gamma", dims);
        Expect(beta, dims.C, "beta", dims);
        Expect(mean, dims.StatCount, "mean", dims);
        Expect(rstd, dims.StatCount, "rstd", dims);
        if (!(eps > 0f)) throw new ArgumentException($"group norm: eps must be positive, got {eps}");

        if (Resolve(variant) == ReductionVariant.GroupTree)
            device.Launch(new KernelConfig(dims.StatCount, ReduceKernels.PowerOfTwoAtLeast(dims.GroupSize, maxTreeWidth)), new RowStatsTreeKernel(x, mean, rstd, dims.GroupSize, eps));
        else
            device.Launch(dims.StatCount, new RowStatsLoopKernel(x, mean, rstd, dims.GroupSize, eps));

        int chunk = ReduceKernels.ElementChunk(device, dims.Length);
        device.Launch(ReduceKernels.ThreadsFor(dims.Length, chunk), new GroupNormForwardKernel(x, gamma, beta, mean, rstd, y, dims, chunk));
    }

    // =============================================================================================
    // Backward (x̂ = (x − μ)·rstd, g = dy·γ[c], sums over the M values of the (n, g) row):
    //   dβ[c] += Σ_{n,s} dy,   dγ[c] += Σ_{n,s} dy·x̂,
    //   dx     += rstd · ( g − (1/M) Σ g − x̂ · (1/M) Σ g·x̂ )
    // the standard batch/layer/group-norm input gradient (Ioffe & Szegedy 2015, §3; Wu & He 2018 use the
    // same with the group as the normalisation set). Because γ is constant over a channel,
    //   Σ_row g = Σ_{c∈g} γ[c]·A[n,c],  Σ_row g·x̂ = Σ_{c∈g} γ[c]·B[n,c],
    // with the per-(n,c) sums A = Σ_s dy, B = Σ_s dy·x̂ — which also give dβ = Σ_n A, dγ = Σ_n B.
    // Stages: (1) A, B per (n,c) [reduction, two variants]; (2) dγ, dβ per channel (one thread each,
    // fixed order over n); (3) the two group sums per (n,g) (one thread each, fixed order over c);
    // (4) dx element-wise.

    // (1) one thread per (n,c) row of S values: A[nc] = Σ_s dy, B[nc] = Σ_s dy·x̂ (2 interleaved accumulators each).
    internal readonly struct ChannelPartialsLoopKernel(ArrayView<float> x, ArrayView<float> dy, ArrayView<float> mean, ArrayView<float> rstd, ArrayView<float> partials, GroupNormDims d) : IThreadKernel
    {
        public void Execute(int nc)
        {
            int r = nc / d.C * d.Groups + nc % d.C / d.ChannelsPerGroup;
            float mu = mean[r], rs = rstd[r];
            int start = nc * d.Spatial;
            int end = start + d.Spatial;
            float a0 = 0f, a1 = 0f, b0 = 0f, b1 = 0f;
            int i = start;
            for (; i + 2 <= end; i += 2)
            {
                float g0 = dy[i], g1 = dy[i + 1];
                a0 += g0;
                a1 += g1;
                b0 += g0 * ((x[i] - mu) * rs);
                b1 += g1 * ((x[i + 1] - mu) * rs);
            }
            if (i < end)
            {
                float g0 = dy[i];
                a0 += g0;
                b0 += g0 * ((x[i] - mu) * rs);
            }
            int count = d.N * d.C;
            partials[nc] = a0 + a1;
            partials[count + nc] = b0 + b1;
        }
    }

    // (1) one group per (n,c) row (grid = N·C): strided per-thread sums, then the fixed tree for A and for B.
    internal readonly struct ChannelPartialsTreeKernel(ArrayView<float> x, ArrayView<float> dy, ArrayView<float> mean, ArrayView<float> rstd, ArrayView<float> partials, GroupNormDims d) : IGroupKernel
    {
        public void Execute()
        {
            var shared = SharedMemory.Allocate<float>(ReduceKernels.MaxTreeWidth);
            int nc = Grid.IdxX;
            int r = nc / d.C * d.Groups + nc % d.C / d.ChannelsPerGroup;
            float mu = mean[r], rs = rstd[r];
            int start = nc * d.Spatial;
            int end = start + d.Spatial;
            float a = 0f, b = 0f;
            for (int i = start + Group.IdxX; i < end; i += Group.DimX)
            {
                float g = dy[i];
                a += g;
                b += g * ((x[i] - mu) * rs);
            }
            float sumA = ReduceKernels.GroupTreeSum(shared, a);
            float sumB = ReduceKernels.GroupTreeSum(shared, b);
            if (Group.IdxX == 0)
            {
                partials[nc] = sumA;
                partials[d.N * d.C + nc] = sumB;
            }
        }
    }

    // (2) one thread per channel c: dβ[c] += Σ_n A[n,c], dγ[c] += Σ_n B[n,c], n ascending. Flags say which to write.
    internal readonly struct GammaBetaBackwardKernel(ArrayView<float> partials, ArrayView<float> dgamma, ArrayView<float> dbeta, GroupNormDims d, int writeGamma, int writeBeta) : IThreadKernel
    {
        public void Execute(int c)
        {
            int count = d.N * d.C;
            float a = 0f, b = 0f;
            for (int n = 0; n < d.N; n++)
            {
                a += partials[n * d.C + c];
                b += partials[count + n * d.C + c];
            }
            if (writeBeta != 0) dbeta[c] += a;
            if (writeGamma != 0) dgamma[c] += b;
        }
    }

    // (3) one thread per row r = (n, g): sums[r] = Σ_{c∈g} γ[c]·A[n,c], sums[N·G + r] = Σ_{c∈g} γ[c]·B[n,c], c ascending.
    internal readonly struct GroupSumsKernel(ArrayView<float> partials, ArrayView<float> gamma, ArrayView<float> sums, GroupNormDims d) : IThreadKernel
    {
        public void Execute(int r)
        {
            int count = d.N * d.C;
            int n = r / d.Groups;
            int c0 = r % d.Groups * d.ChannelsPerGroup;
            float sa = 0f, sb = 0f;
            for (int k = 0; k < d.ChannelsPerGroup; k++)
            {
                int c = c0 + k;
                float gm = gamma[c];
                sa += gm * partials[n * d.C + c];
                sb += gm * partials[count + n * d.C + c];
            }
            sums[r] = sa;
            sums[d.StatCount + r] = sb;
        }
    }

    // (4) dx[i] += rstd·(dy·γ[c] − (Σg + x̂·Σg·x̂)/M), thread t handles elements [t·chunk, (t+1)·chunk).
    internal readonly struct GroupNormInputBackwardKernel(ArrayView<float> x, ArrayView<float> dy, ArrayView<float> gamma, ArrayView<float> mean, ArrayView<float> rstd, ArrayView<float> sums, ArrayView<float> dx, GroupNormDims d, int chunk) : IThreadKernel
    {
        public void Execute(int t)
        {
            int start = t * chunk;
            int end = Math.Min(start + chunk, d.Length);
            int m = d.GroupSize, s = d.Spatial, c = d.C, stats = d.StatCount;
            float invM = 1f / m;
            for (int i = start; i < end; i++)
            {
                int r = i / m;
                int ch = i / s % c;
                float rs = rstd[r];
                float xhat = (x[i] - mean[r]) * rs;
                dx[i] += rs * (dy[i] * gamma[ch] - (sums[r] + xhat * sums[stats + r]) * invM);
            }
        }
    }

    /// <summary>
    /// Backward of <see cref="Forward"/> given dy [N,C,S] and the saved mean and rstd [N·G]. ADDS into the
    /// gradient outputs: dx [N,C,S] += ∂L/∂x, dgamma [C] += ∂L/∂γ, dbeta [C] += ∂L/∂β. Pass an empty view
    /// (<c>default</c>) for a gradient that is not needed. Deterministic (fixed summation orders, no atomics).
    /// </summary>
    public void Backward(ArrayView<float> x, ArrayView<float> gamma, ArrayView<float> mean, ArrayView<float> rstd, ArrayView<float> dy,
        ArrayView<float> dx, ArrayView<float> dgamma, ArrayView<float> dbeta, GroupNormDims dims, ReductionVariant variant = ReductionVariant.Auto) =>
        Backward(x, gamma, mean, rstd, dy, dx, dgamma, dbeta, dims, variant, treeWidth);

    /// <summary><see cref="Backward(ArrayView{float}, ArrayView{float}, ArrayView{float}, ArrayView{float}, ArrayView{float}, ArrayView{float}, ArrayView{float}, ArrayView{float}, GroupNormDims, ReductionVariant)"/> with the tree variant's group width capped at <paramref name="maxTreeWidth"/>.</summary>
    internal void Backward(ArrayView<float> x, ArrayView<float> gamma, ArrayView<float> mean, ArrayView<float> rstd, ArrayView<float> dy,
        ArrayView<float> dx, ArrayView<float> dgamma, ArrayView<float> dbeta, GroupNormDims dims, ReductionVariant variant, int maxTreeWidth)
    {
        CheckTreeWidth(maxTreeWidth);
        Expect(x, dims.Length, "x", dims);
        Expect(dy, dims.Length, "dy", dims);
        Expect(gamma, dims.C, "gamma", dims);
        Expect(mean, dims.StatCount, "mean", dims);
        Expect(rstd, dims.StatCount, "rstd", dims);
        bool wantX = dx.Length != 0, wantGamma = dgamma.Length != 0, wantBeta = dbeta.Length != 0;
        if (wantX) Expect(dx, dims.Length, "dx", dims);
        if (wantGamma) Expect(dgamma, dims.C, "dgamma", dims);
        if (wantBeta) Expect(dbeta, dims.C, "dbeta", dims);
        if (!wantX && !wantGamma && !wantBeta) return;

        // Scratch goes back to the pool once the kernels are queued: later users are queued after them on the same stream.
        int count = dims.N * dims.C;
        using var partials = device.Pool.Rent<float>(2 * count);
        if (Resolve(variant) == ReductionVariant.GroupTree)
            device.Launch(new KernelConfig(count, ReduceKernels.PowerOfTwoAtLeast(dims.Spatial, maxTreeWidth)), new ChannelPartialsTreeKernel(x, dy, mean, rstd, partials.View, dims));
        else
            device.Launch(count, new ChannelPartialsLoopKernel(x, dy, mean, rstd, partials.View, dims));

        if (wantGamma || wantBeta)
        {
            // An absent output is replaced by a dummy view the kernel is told not to write.
            var dg = wantGamma ? dgamma : partials.View.SubView(0, 1);
            var db = wantBeta ? dbeta : partials.View.SubView(0, 1);
            device.Launch(dims.C, new GammaBetaBackwardKernel(partials.View, dg, db, dims, wantGamma ? 1 : 0, wantBeta ? 1 : 0));
        }

        if (wantX)
        {
            using var sums = device.Pool.Rent<float>(2 * dims.StatCount);
            device.Launch(dims.StatCount, new GroupSumsKernel(partials.View, gamma, sums.View, dims));
            int chunk = ReduceKernels.ElementChunk(device, dims.Length);
            device.Launch(ReduceKernels.ThreadsFor(dims.Length, chunk), new GroupNormInputBackwardKernel(x, dy, gamma, mean, rstd, sums.View, dx, dims, chunk));
        }
    }

    /// <summary>The variant <see cref="ReductionVariant.Auto"/> stands for on this device.</summary>
    internal ReductionVariant Resolve(ReductionVariant variant) => variant switch
    {
        ReductionVariant.Auto => device.IsCpu ? ReductionVariant.PerThreadLoop : ReductionVariant.GroupTree,
        _ => variant,
    };

    private void CheckTreeWidth(int width)
    {
        if (width < 1 || width > treeWidth || (width & (width - 1)) != 0)
            throw new ArgumentException($"group norm: the tree width must be a power of two from 1 to {treeWidth}, got {width}");
    }

    private static void Expect(ArrayView<float> view, int length, string name, GroupNormDims dims)
    {
        if (view.Length != length)
            throw new ArgumentException($"group norm: expected {name} of {length} elements for {dims}, got {view.Length}");
    }
}
