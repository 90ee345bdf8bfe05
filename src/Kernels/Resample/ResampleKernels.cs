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
public sealed class ResampleKernels : IKernelFamily<ResampleKernels>
{
    private readonly ComputeDevice device;

    private ResampleKernels(ComputeDevice device, GridStride launch)
    {
        this.device = device;
        Launch = launch;
    }

    /// <inheritdoc/>
    public static ResampleKernels Create(ComputeDevice device) => new(device, device.ElementShape);

    /// <summary>A family with a chosen launch shape (tests run the GPU's, and odd ones, on the CPU).</summary>
    internal static ResampleKernels CreateWith(ComputeDevice device, GridStride launch) => new(device, launch);

    /// <summary>How launches are sized (units = input elements).</summary>
    internal GridStride Launch { get; }

    // x [N,C,H,W] -> y [N,C,2H,2W]:  y[n,c,2h+a,2w+b] = x[n,c,h,w], a,b ∈ {0,1}
    // Input element e = row·W + w with row = (n·C + c)·H + h; its block starts at output row 2·row, column 2w.
    internal readonly struct Upsample2xKernel(ArrayView<float> x, ArrayView<float> y, int width) : IElementKernel
    {
        public void Element(int e)
        {
            int outWidth = 2 * width;
            int row = e / width;
            int w = e - row * width;
            int top = 2 * row * outWidth + 2 * w;
            float v = x[e];
            y[top] = v;
            y[top + 1] = v;
            y[top + outWidth] = v;
            y[top + outWidth + 1] = v;
        }
    }

    // dy [N,C,2H,2W] -> dx [N,C,H,W] (ADDS):
    //   dx[n,c,h,w] += (dy[2h,2w] + dy[2h,2w+1]) + (dy[2h+1,2w] + dy[2h+1,2w+1])   (fixed order)
    internal readonly struct Upsample2xBackwardKernel(ArrayView<float> dy, ArrayView<float> dx, int width) : IElementKernel
    {
        public void Element(int e)
        {
            int outWidth = 2 * width;
            int row = e / width;
            int w = e - row * width;
            int top = 2 * row * outWidth + 2 * w;
            dx[e] += (dy[top] + dy[top + 1]) + (dy[top + outWidth] + dy[top + outWidth + 1]);
        }
    }

    /// <summary>Nearest ×2 upsampling: x [N,C,H,W] → y [N,C,2H,2W].</summary>
    public void Upsample2x(ArrayView<float> x, ArrayView<float> y, int n, int c, int height, int width)
    {
        int len = InputLength(n, c, height, width);
        Expect(x, len, $"upsample x [{n}, {c}, {height}, {width}]");
        Expect(y, 4L * len, $"upsample y [{n}, {c}, {2 * height}, {2 * width}]");
        device.LaunchElements(Launch, len, new Upsample2xKernel(x, y, width));
    }

    /// <summary>
    /// Upsample backward: dx[n,c,h,w] += Σ of the 2×2 block of dy above it. ADDS into <paramref name="dx"/>.
    /// </summary>
    public void Upsample2xBackward(ArrayView<float> dy, ArrayView<float> dx, int n, int c, int height, int width)
    {
        int len = InputLength(n, c, height, width);
        Expect(dy, 4L * len, $"upsample dy [{n}, {c}, {2 * height}, {2 * width}]");
        Expect(dx, len, $"upsample dx [{n}, {c}, {height}, {width}]");
        device.LaunchElements(Launch, len, new Upsample2xBackwardKernel(dy, dx, width));
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
