using IlgpuDdpm.Autodiff;

namespace IlgpuDdpm.Network;

/// <summary>
/// The nonlinearity of the U-Net (<see cref="UNetConfig.Activation"/>): every ResBlock, the time
/// embedding and the tail apply this one function (DESIGN.md §4). Adding one means an operator and a
/// tape op below the network, then a member here, its names and its arm in <see cref="Activations.Apply"/>.
/// </summary>
public enum Activation
{
    /// <summary>SiLU (swish), x·σ(x): the DDPM reference code's <c>nonlinearity</c>.</summary>
    Silu,
}

/// <summary>What the network knows about each <see cref="Activation"/>: its names and the tape op that applies it.</summary>
public static class Activations
{
    /// <summary>The name in the config JSON and on the command line ("silu").</summary>
    public static string JsonName(this Activation activation) => activation switch
    {
        Activation.Silu => "silu",
        _ => throw Unknown(activation),
    };

    /// <summary>The name in summaries and descriptions ("SiLU").</summary>
    public static string DisplayName(this Activation activation) => activation switch
    {
        Activation.Silu => "SiLU",
        _ => throw Unknown(activation),
    };

    /// <summary>y = activation(x) on the tape, any shape, with its backward recorded.</summary>
    public static Tensor Apply(this Tape tape, Activation activation, Tensor x) => activation switch
    {
        Activation.Silu => tape.Silu(x),
        _ => throw Unknown(activation),
    };

    /// <summary>Every activation, in declaration order.</summary>
    public static IReadOnlyList<Activation> All { get; } = Enum.GetValues<Activation>();

    /// <summary>The activation whose <see cref="JsonName"/> is <paramref name="name"/> (case-insensitive), or null.</summary>
    public static Activation? FromJsonName(string name) =>
        All.Cast<Activation?>().FirstOrDefault(a => string.Equals(a!.Value.JsonName(), name.Trim(), StringComparison.OrdinalIgnoreCase));

    private static ArgumentOutOfRangeException Unknown(Activation activation) =>
        new(nameof(activation), $"unknown activation {(int)activation}");
}
