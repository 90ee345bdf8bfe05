using IlgpuDdpm.Autodiff;
using IlgpuDdpm.Kernels.Device;

namespace IlgpuDdpm.Network;

/// <summary>
/// A model's parameters in ONE flat device buffer of values and ONE of gradients (issue 9): parameter i is the
/// window [<see cref="Offsets"/>[i], + its length) of each, in spec order, packed without gaps. So zeroing every
/// gradient is one memset, and the optimizer updates every parameter in one launch per kernel instead of one per
/// tensor (a GPU pays microseconds per launch however small). The U-Net and the classifier both keep theirs here.
/// </summary>
public sealed class ParameterSet : IReadOnlyList<Parameter>, IDisposable
{
    private readonly Parameter[] parameters;
    private readonly Dictionary<string, Parameter> byName;
    private readonly int[] offsets;
    private bool disposed;

    /// <summary>One parameter per spec on <paramref name="device"/>, values zero, gradients zero.</summary>
    public ParameterSet(ComputeDevice device, IEnumerable<ParameterSpec> specs)
    {
        Device = device;
        Specs = [.. specs];
        if (Specs.Count == 0) throw new ArgumentException("a parameter set needs at least one parameter");
        offsets = new int[Specs.Count];
        long total = 0;
        for (int i = 0; i < Specs.Count; i++)
        {
            offsets[i] = checked((int)total);
            total += Specs[i].Length;
        }
        Length = checked((int)total);
        Values = device.Pool.RentZeroed<float>(Length);
        try
        {
            Gradients = device.Pool.RentZeroed<float>(Length);
            parameters = new Parameter[Specs.Count];
            for (int i = 0; i < parameters.Length; i++)
            {
                var spec = Specs[i];
                int n = (int)spec.Length;
                parameters[i] = Parameter.Window(device, spec.Name, spec.Shape, Values.Slice(offsets[i], n), Gradients.Slice(offsets[i], n));
            }
            byName = parameters.ToDictionary(p => p.Name);
        }
        catch
        {
            Values.Dispose();
            Gradients?.Dispose();
            throw;
        }
    }

    /// <summary>The device the buffers live on.</summary>
    public ComputeDevice Device { get; }

    /// <summary>Name, shape and initialisation rule of each parameter, same order.</summary>
    public IReadOnlyList<ParameterSpec> Specs { get; }

    /// <summary>Every value of every parameter, parameter after parameter.</summary>
    public DeviceBuffer<float> Values { get; }

    /// <summary>Every gradient, laid out like <see cref="Values"/>.</summary>
    public DeviceBuffer<float> Gradients { get; }

    /// <summary>Total number of trainable values (the length of both flat buffers).</summary>
    public int Length { get; }

    /// <summary>Where parameter i starts in the flat buffers.</summary>
    public IReadOnlyList<int> Offsets => offsets;

    /// <summary>Number of parameters.</summary>
    public int Count => parameters.Length;

    /// <summary>Parameter <paramref name="index"/>.</summary>
    public Parameter this[int index] => parameters[index];

    /// <summary>The parameter called <paramref name="name"/>; throws <see cref="KeyNotFoundException"/> (one line) if there is none.</summary>
    public Parameter Get(string name) =>
        byName.TryGetValue(name, out var p) ? p : throw new KeyNotFoundException($"the model has no parameter named '{name}'");

    /// <summary>Whether a parameter called <paramref name="name"/> exists.</summary>
    public bool TryGet(string name, out Parameter parameter) => byName.TryGetValue(name, out parameter!);

    /// <summary>
    /// Sets every value from the host in one upload: parameter i gets <paramref name="values"/>(i, its spec),
    /// which must hold exactly its elements.
    /// </summary>
    public void Load(Func<int, ParameterSpec, float[]> values)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        var host = new float[Length];
        for (int i = 0; i < parameters.Length; i++)
        {
            var v = values(i, Specs[i]);
            if (v.Length != parameters[i].Length)
                throw new ArgumentException($"parameter {parameters[i]} holds {parameters[i].Length} values, got {v.Length}");
            v.CopyTo(host, offsets[i]);
        }
        Values.CopyFrom(host);
    }

    /// <summary>Sets every gradient to zero: one memset over the flat gradient buffer.</summary>
    public void ZeroGrad()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        Gradients.Clear();
    }

    /// <summary>
    /// Per-parameter windows on <paramref name="flat"/>, a buffer laid out like <see cref="Values"/> (optimizer
    /// moments, EMA weights): window i has parameter i's offset and length. No copy, no allocation on the device.
    /// </summary>
    public DeviceBuffer<float>[] Slices(DeviceBuffer<float> flat)
    {
        if (flat.Length != Length) throw new ArgumentException($"a buffer laid out like the parameters holds {Length} values, got {flat.Length}");
        return [.. parameters.Select((p, i) => flat.Slice(offsets[i], p.Length))];
    }

    /// <inheritdoc/>
    public IEnumerator<Parameter> GetEnumerator() => ((IEnumerable<Parameter>)parameters).GetEnumerator();

    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => parameters.GetEnumerator();

    /// <summary>Returns both flat buffers to the pool (the parameters are views on them).</summary>
    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        Values.Dispose();
        Gradients.Dispose();
    }
}
