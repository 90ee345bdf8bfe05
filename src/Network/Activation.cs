using IlgpuDdpm.Autodiff;
using IlgpuDdpm.Kernels.Elementwise;
using IlgpuDdpm.Kernels.Random;

namespace IlgpuDdpm.Network;

/// <summary>
/// The nonlinearity of the U-Net (<see cref="UNetConfig.Activation"/>): every ResBlock, the time
/// embedding and the tail apply this one function (DESIGN.md §4). Adding one takes an operator and a
/// tape op below the network, then a member here and its row in <see cref="Activations"/>.
/// </summary>
public enum Activation
{
    /// <summary>SiLU (swish), x·σ(x): the DDPM reference code's <c>nonlinearity</c>.</summary>
    Silu,

    /// <summary>GELU, tanh approximation (PyTorch <c>approximate='tanh'</c>): ½x(1 + tanh(√(2/π)(x + 0.044715x³))).</summary>
    Gelu,
}

/// <summary>What the network knows about each <see cref="Activation"/>: its names and the tape op that applies it.</summary>
public static class Activations
{
    private sealed record Entry(string JsonName, string DisplayName, Func<Tape, Tensor, Tensor> Apply, NormThenApply AfterNorm);

    private delegate Tensor NormThenApply(Tape tape, Tensor x, Tensor gamma, Tensor beta, int groups, float eps, float dropout, PhiloxKey dropoutKey);

    // One row per activation: the name in config JSON, the name in summaries, and its operator, which gives the tape
    // op and the group norm with the activation fused in.
    private static readonly Dictionary<Activation, Entry> Entries = new()
    {
        [Activation.Silu] = Row<SiluOp>("silu", "SiLU"),
        [Activation.Gelu] = Row<GeluOp>("gelu", "GELU"),
    };

    private static Entry Row<TOp>(string jsonName, string displayName) where TOp : struct, IUnaryOp =>
        new(jsonName, displayName, (tape, x) => tape.Unary(x, new TOp()), (tape, x, gamma, beta, groups, eps, dropout, key) => tape.GroupNorm(x, gamma, beta, groups, new TOp(), eps, dropout, key));

    /// <summary>Every activation, in declaration order.</summary>
    public static IReadOnlyList<Activation> All { get; } = [.. Entries.Keys.Order()];

    /// <summary>The name in the config JSON ("silu").</summary>
    public static string JsonName(this Activation activation) => Of(activation).JsonName;

    /// <summary>The name in summaries and descriptions ("SiLU").</summary>
    public static string DisplayName(this Activation activation) => Of(activation).DisplayName;

    /// <summary>y = activation(x) on the tape, any shape, with its backward recorded.</summary>
    public static Tensor Apply(this Tape tape, Activation activation, Tensor x) => Of(activation).Apply(tape, x);

    /// <summary>
    /// y = Dropout(activation(GroupNorm(x)), <paramref name="dropout"/>) on the tape as one fused op (<see cref="NormOps"/>),
    /// with its backward recorded; the dropout (when p &gt; 0 and training) draws x's length in numbers from <paramref name="dropoutKey"/>.
    /// </summary>
    public static Tensor GroupNormThenApply(this Tape tape, Activation activation, Tensor x, Tensor gamma, Tensor beta, int groups, float eps,
                                            float dropout = 0f, PhiloxKey dropoutKey = default) =>
        Of(activation).AfterNorm(tape, x, gamma, beta, groups, eps, dropout, dropoutKey);

    /// <summary>The activation whose <see cref="JsonName"/> is <paramref name="name"/> (case-insensitive, trimmed), or null.</summary>
    public static Activation? FromJsonName(string name) =>
        All.Cast<Activation?>().FirstOrDefault(a => string.Equals(Entries[a!.Value].JsonName, name.Trim(), StringComparison.OrdinalIgnoreCase));

    private static Entry Of(Activation activation) =>
        Entries.TryGetValue(activation, out var entry) ? entry : throw new ArgumentOutOfRangeException(nameof(activation), $"unknown activation {(int)activation}");
}
