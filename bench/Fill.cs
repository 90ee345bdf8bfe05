using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Random;

namespace IlgpuDdpm.Bench;

/// <summary>Device buffers filled with random numbers on the device (Philox), for benchmark inputs.</summary>
public static class Fill
{
    /// <summary>A buffer of <paramref name="length"/> N(0, 1)·<paramref name="scale"/> floats (scale applied on the host when not 1).</summary>
    public static DeviceBuffer<float> Normal(ComputeDevice device, int length, uint stream, float scale = 1f)
    {
        var buffer = device.Pool.Rent<float>(length);
        device.Kernels<RandomKernels>().Normal(buffer.View, new PhiloxKey(0x5eed, stream, 0));
        if (scale != 1f)
        {
            var data = buffer.ToArray();
            for (int i = 0; i < data.Length; i++) data[i] *= scale;
            buffer.CopyFrom(data);
        }
        return buffer;
    }

    /// <summary>A buffer of <paramref name="length"/> U[lo, hi) floats.</summary>
    public static DeviceBuffer<float> Uniform(ComputeDevice device, int length, uint stream, float lo, float hi)
    {
        var buffer = device.Pool.Rent<float>(length);
        device.Kernels<RandomKernels>().Uniform(buffer.View, new PhiloxKey(0x5eed, stream, 0));
        var data = buffer.ToArray();
        for (int i = 0; i < data.Length; i++) data[i] = lo + (hi - lo) * data[i];
        buffer.CopyFrom(data);
        return buffer;
    }

    /// <summary>A buffer of <paramref name="length"/> integers uniform in [0, count).</summary>
    public static DeviceBuffer<int> Integers(ComputeDevice device, int length, uint stream, int count)
    {
        var buffer = device.Pool.Rent<int>(length);
        device.Kernels<RandomKernels>().Integers(buffer.View, new PhiloxKey(0x5eed, stream, 0), count);
        return buffer;
    }

    /// <summary>A device copy of <paramref name="data"/>.</summary>
    public static DeviceBuffer<float> From(ComputeDevice device, float[] data)
    {
        var buffer = device.Pool.Rent<float>(data.Length);
        buffer.CopyFrom(data);
        return buffer;
    }
}
