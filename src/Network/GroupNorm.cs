using IlgpuDdpm.Autodiff;

namespace IlgpuDdpm.Network;

/// <summary>
/// Group normalisation (Wu &amp; He 2018), eps 1e-5, affine: <c>{name}.weight</c> (γ, ones) and
/// <c>{name}.bias</c> (β, zeros), both [C]. x [N,C,H,W] → same shape.
/// </summary>
public sealed class GroupNorm
{
    /// <summary>The ε inside the square root.</summary>
    public const float Epsilon = 1e-5f;

    /// <summary>Creates the layer's parameters from <paramref name="source"/>.</summary>
    public GroupNorm(ParameterSource source, string name, int channels, int groups)
    {
        if (groups <= 0 || channels % groups != 0)
            throw new ArgumentException($"{name}: {channels} channels must be divisible by {groups} groups");
        var specs = Specs(name, channels);
        Weight = source.Take(specs[0]);
        Bias = source.Take(specs[1]);
        Name = name;
        Channels = channels;
        Groups = groups;
    }

    /// <summary>γ (ones) and β (zeros).</summary>
    public static ParameterSpec[] Specs(string name, int channels) =>
    [
        new($"{name}.weight", [channels], ParameterInit.Ones),
        new($"{name}.bias", [channels], ParameterInit.Zeros),
    ];

    /// <summary>The dotted prefix of the parameters.</summary>
    public string Name { get; }

    /// <summary>γ [C].</summary>
    public Parameter Weight { get; }

    /// <summary>β [C].</summary>
    public Parameter Bias { get; }

    /// <summary>C.</summary>
    public int Channels { get; }

    /// <summary>Number of groups.</summary>
    public int Groups { get; }

    /// <summary>x [N,C,...] → same shape.</summary>
    public Tensor Forward(Tape tape, Tensor x) => tape.GroupNorm(x, Weight, Bias, Groups, Epsilon);
}
