namespace IlgpuDdpm.Network;

/// <summary>
/// Group normalisation (Wu &amp; He 2018), eps 1e-5, affine: <c>{name}.weight</c> (γ, ones) and
/// <c>{name}.bias</c> (β, zeros), both [C]. x [N,C,H,W] → same shape.
/// </summary>
public sealed class GroupNorm
{
    /// <summary>The ε inside the square root.</summary>
    public const float Epsilon = 1e-5f;

    /// <summary>A norm of <paramref name="channels"/> channels in <paramref name="groups"/> groups (which must divide them).</summary>
    public GroupNorm(string name, int channels, int groups)
    {
        if (groups <= 0 || channels % groups != 0)
            throw new ArgumentException($"{name}: {channels} channels must be divisible by {groups} groups");
        Name = name;
        Channels = channels;
        Groups = groups;
        Weight = new($"{name}.weight", [channels], ParameterInit.Ones);
        Bias = new($"{name}.bias", [channels], ParameterInit.Zeros);
    }

    /// <summary>The dotted prefix of the parameters.</summary>
    public string Name { get; }

    /// <summary>γ [C].</summary>
    public ParameterSpec Weight { get; }

    /// <summary>β [C].</summary>
    public ParameterSpec Bias { get; }

    /// <summary>C.</summary>
    public int Channels { get; }

    /// <summary>Number of groups.</summary>
    public int Groups { get; }

    /// <summary>x [N,C,...] → same shape.</summary>
    public T Forward<T>(IForwardOps<T> ops, T x) => ops.GroupNorm(this, x);

    /// <summary>
    /// act(norm(x)), act the config's activation, then dropout with probability <paramref name="dropout"/> in training (none
    /// at 0), as one fused op: x [N,C,...] → same shape.
    /// </summary>
    public T ForwardActivated<T>(IForwardOps<T> ops, T x, float dropout = 0f) => ops.GroupNormActivate(this, x, dropout);
}
