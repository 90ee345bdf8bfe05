using ILGPU;
using IlgpuDdpm.Kernels.Device;

namespace IlgpuDdpm.Kernels.Resample;

/// <summary>
/// Nearest-neighbour ×2 upsampling (the U-Net's <c>Upsample</c> before its conv, DESIGN.md §4) and its
/// backward. One unit of work = one INPUT element: the forward writes its 2×2 output block, the backward
/// sums that block of the output gradient — so the backward is a gather in a fixed order, with no atomics
/// and bit-for-bit repeatable. Grid-stride loops (<see cref="GridStride"/>: four input elements per thread on
/// a GPU, a few threads per core on the CPU accelerator). Backward methods ADD into their gradient outputs.
/// </summary>
public sealed class ResampleKernels : GridStrideFamily, IKernelFamily<ResampleKernels>
{
    /// <summary>Self-check probes. Tolerance: copies and 4-term sums in the same order.</summary>
    public static KernelProbes Probes { get; } = new("Resample", 1e-6, [.. new[] { (2, 32, 7, 7), (1, 3, 5, 9), (2, 64, 16, 16) }.Select(s =>
        new KernelProbe($"Upsample2x and backward {s}", k =>
        {
            var (r, (n, c, h, w)) = (k.Kernels<ResampleKernels>(), s);
            r.Upsample2x(k.In(n * c * h * w).View, k.Out(4 * n * c * h * w).View, n, c, h, w);
            r.Upsample2xBackward(k.In(4 * n * c * h * w).View, k.Acc(n * c * h * w).View, n, c, h, w);
        }))]);

    private ResampleKernels(ComputeDevice device, GridStride launch) : base(device, launch) { }

    /// <inheritdoc/>
    public static ResampleKernels Create(ComputeDevice device) => new(device, device.ElementShape);

    /// <summary>A family with a chosen launch shape (tests run the GPU's, and odd ones, on the CPU; units = input elements).</summary>
    internal static ResampleKernels CreateWith(ComputeDevice device, GridStride launch) => new(device, launch);

    // Input element e = row·W + w with row = (n·C + c)·H + h; its 2×2 output block starts at output row 2·row, column 2w.
    // Forward (backward 0), x [N,C,H,W] -> y [N,C,2H,2W]:  y[n,c,2h+a,2w+b] = x[n,c,h,w], a,b ∈ {0,1}.
    // Backward (backward 1), dy [N,C,2H,2W] -> dx [N,C,H,W] (ADDS):
    //   dx[n,c,h,w] += (dy[2h,2w] + dy[2h,2w+1]) + (dy[2h+1,2w] + dy[2h+1,2w+1])   (fixed order)
    internal readonly struct Upsample2xKernel(ArrayView<float> small, ArrayView<float> large, int width, int backward) : IElementKernel
    {
        public void Element(int e)
        {
            int outWidth = 2 * width;
            int row = e / width;
            int top = 2 * row * outWidth + 2 * (e - row * width);
            if (backward != 0)
            {
                small[e] += (large[top] + large[top + 1]) + (large[top + outWidth] + large[top + outWidth + 1]);
                return;
            }
            float v = small[e];
            large[top] = v;
            large[top + 1] = v;
            large[top + outWidth] = v;
            large[top + outWidth + 1] = v;
        }
    }

    /// <summary>Nearest ×2 upsampling: x [N,C,H,W] → y [N,C,2H,2W].</summary>
    public void Upsample2x(ArrayView<float> x, ArrayView<float> y, int n, int c, int height, int width)
    {
        int len = InputLength(n, c, height, width);
        Expect(x, len, $"upsample x [{n}, {c}, {height}, {width}]");
        Expect(y, 4L * len, $"upsample y [{n}, {c}, {2 * height}, {2 * width}]");
        Run(len, new Upsample2xKernel(x, y, width, 0));
    }

    /// <summary>
    /// Upsample backward: dx[n,c,h,w] += Σ of the 2×2 block of dy above it. ADDS into <paramref name="dx"/>.
    /// </summary>
    public void Upsample2xBackward(ArrayView<float> dy, ArrayView<float> dx, int n, int c, int height, int width)
    {
        int len = InputLength(n, c, height, width);
        Expect(dy, 4L * len, $"upsample dy [{n}, {c}, {2 * height}, {2 * width}]");
        Expect(dx, len, $"upsample dx [{n}, {c}, {height}, {width}]");
        Run(len, new Upsample2xKernel(dx, dy, width, 1));
    }

    private static int InputLength(int n, int c, int height, int width)
    {
        if (n <= 0 || c <= 0 || height <= 0 || width <= 0)
            throw new ArgumentException($"upsample: dimensions must be positive, got [{n}, {c}, {height}, {width}]");
        long len = (long)n * c * height * width;
        if (4 * len > int.MaxValue)
            throw new ArgumentException($"upsample: output [{n}, {c}, {2 * height}, {2 * width}] exceeds 2^31 elements (32-bit indices)");
        return (int)len;
    }

    private static void Expect(ArrayView<float> view, long expected, string what)
    {
        if (view.Length != expected) throw new ArgumentException($"{what}: expected {expected} elements, got {view.Length}");
    }
}
