using IlgpuDdpm.Autodiff;

namespace IlgpuDdpm.Network;

/// <summary>How a parameter starts (DESIGN.md §4).</summary>
public enum InitKind
{
    /// <summary>All zeros (biases, GroupNorm shift β).</summary>
    Zeros,
    /// <summary>All ones (GroupNorm scale γ).</summary>
    Ones,
    /// <summary>Uniform in ±gain·√(6 / (fan_in + fan_out)) (Glorot &amp; Bengio 2010; TF's variance_scaling fan_avg uniform).</summary>
    XavierUniform,
}

/// <summary>
/// The initialisation rule of one parameter. For convolutions fan_in = Cin·K·K and fan_out = Cout·K·K,
/// for linears fan_in = in and fan_out = out. <see cref="NearZero"/> marks the layers that start near
/// zero (gain <see cref="UNet.NearZeroGain"/> = 1e-5 in the DDPM reference code): the last conv of
/// every ResBlock, the attention output projection and the tail conv; every other Xavier layer has gain 1.
/// </summary>
public readonly record struct ParameterInit(InitKind Kind, int FanIn = 0, int FanOut = 0, bool NearZero = false)
{
    /// <summary>Zeros.</summary>
    public static ParameterInit Zeros => new(InitKind.Zeros);

    /// <summary>Ones.</summary>
    public static ParameterInit Ones => new(InitKind.Ones);

    /// <summary>Uniform Xavier with the given fans.</summary>
    public static ParameterInit Xavier(int fanIn, int fanOut, bool nearZero = false) => new(InitKind.XavierUniform, fanIn, fanOut, nearZero);

    /// <summary>The half-width of the uniform distribution for a layer of gain <paramref name="gain"/>.</summary>
    public double Bound(double gain) => gain * Math.Sqrt(6.0 / (FanIn + FanOut));
}

/// <summary>A parameter before it exists on a device: its dotted name, shape and initialisation rule.</summary>
public sealed record ParameterSpec(string Name, int[] Shape, ParameterInit Init)
{
    /// <summary>Number of elements.</summary>
    public long Length => Shape.Aggregate(1L, (a, d) => a * d);

    /// <summary>Same name, shape and rule (shapes compared by value).</summary>
    public bool Equals(ParameterSpec? other) =>
        other is not null && Name == other.Name && Shape.AsSpan().SequenceEqual(other.Shape) && Init == other.Init;

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(Name, Shape.Length, Init);

    /// <summary>"down.0.block.0.conv1.weight [32, 16, 3, 3]".</summary>
    public override string ToString() => $"{Name} {Tensor.ShapeText(Shape)}";
}
