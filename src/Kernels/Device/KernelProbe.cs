namespace IlgpuDdpm.Kernels.Device;

/// <summary>One representative launch of a kernel family: it fills a <see cref="ProbeScope"/> with inputs and outputs.</summary>
/// <param name="Name">What is launched, with its shape.</param>
/// <param name="Run">Rents inputs and outputs from the scope and calls the family's wrapper methods.</param>
public sealed record KernelProbe(string Name, Action<ProbeScope> Run);

/// <summary>
/// A kernel family's probes for the accelerator self-check, with its tolerance on the relative difference
/// between a device and the CPU accelerator (see the family's comment for what the tolerance absorbs).
/// </summary>
public sealed record KernelProbes(string Family, double Tolerance, IReadOnlyList<KernelProbe> Probes);

/// <summary>
/// The device buffers of one probe run. Inputs are uniform random values from a generator with a fixed seed,
/// so every device and every run sees the same numbers; <see cref="Out"/> and <see cref="Acc"/> buffers are the
/// probe's outputs, read back in the order they were rented. Everything returns to the pool on dispose.
/// </summary>
public sealed class ProbeScope(ComputeDevice device) : IDisposable
{
    private readonly System.Random random = new(0x5E1F);
    private readonly List<IDisposable> rented = [];
    private readonly List<Func<float[]>> outputs = [];

    /// <summary>The device under test (or the reference).</summary>
    public ComputeDevice Device { get; } = device;

    /// <summary>The kernel family <typeparamref name="T"/> on this device.</summary>
    public T Kernels<T>() where T : class, IKernelFamily<T> => Device.Kernels<T>();

    /// <summary>n uniform values in [lo, hi) from the scope's seeded generator.</summary>
    public float[] Data(int n, float lo = -1f, float hi = 1f)
    {
        var data = new float[n];
        for (int i = 0; i < n; i++) data[i] = lo + (hi - lo) * random.NextSingle();
        return data;
    }

    /// <summary>An input buffer holding <paramref name="data"/>.</summary>
    public DeviceBuffer<T> Upload<T>(T[] data) where T : unmanaged
    {
        var buffer = Rent<T>(data.Length, zeroed: false);
        buffer.CopyFrom(data);
        return buffer;
    }

    /// <summary>An input buffer of n uniform values in [lo, hi).</summary>
    public DeviceBuffer<float> In(int n, float lo = -1f, float hi = 1f) => Upload(Data(n, lo, hi));

    /// <summary>A zeroed output buffer.</summary>
    public DeviceBuffer<float> Out(int n) => Output(Rent<float>(n, zeroed: true));

    /// <summary>An output that starts random: for kernels that add into (or update) their output.</summary>
    public DeviceBuffer<float> Acc(int n, float lo = -1f, float hi = 1f) => Output(In(n, lo, hi));

    /// <summary>Marks <paramref name="buffer"/> as an output (read back after the probe).</summary>
    public DeviceBuffer<float> Output(DeviceBuffer<float> buffer)
    {
        outputs.Add(buffer.ToArray);
        return buffer;
    }

    /// <summary>A zeroed integer output, compared as floats.</summary>
    public DeviceBuffer<int> IntOut(int n)
    {
        var buffer = Rent<int>(n, zeroed: true);
        outputs.Add(() => Array.ConvertAll(buffer.ToArray(), v => (float)v));
        return buffer;
    }

    /// <summary>Runs <paramref name="probe"/> on <paramref name="device"/> and returns its outputs.</summary>
    public static float[][] Run(KernelProbe probe, ComputeDevice device)
    {
        using var scope = new ProbeScope(device);
        probe.Run(scope);
        device.Synchronize();
        return scope.outputs.Select(read => read()).ToArray();
    }

    private DeviceBuffer<T> Rent<T>(int n, bool zeroed) where T : unmanaged
    {
        var buffer = zeroed ? Device.Pool.RentZeroed<T>(n) : Device.Pool.Rent<T>(n);
        rented.Add(buffer);
        return buffer;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        Device.Synchronize();
        foreach (var b in rented) b.Dispose();
    }
}
