using ILGPU;
using IlgpuDdpm.Autodiff;

namespace IlgpuDdpm.Network;

/// <summary>
/// The time embedding of DESIGN.md §4: <c>temb = Linear(4ch→4ch)(SiLU(Linear(ch→4ch)(sinusoid(t))))</c>,
/// sinusoid(t) = [sin(t·f_0..f_{h−1}), cos(t·f_0..f_{h−1})], h = ch/2, f_i = exp(−ln(10000)·i/(h−1)),
/// t the 0-based step as a float. Parameters <c>{name}.0.*</c> [4ch, ch] and <c>{name}.1.*</c> [4ch, 4ch].
/// </summary>
public sealed class TimestepEmbedding
{
    /// <summary>Creates the two linears from <paramref name="source"/>.</summary>
    public TimestepEmbedding(ParameterSource source, string name, int channels, int embeddingDim)
    {
        Name = name;
        Channels = channels;
        EmbeddingDim = embeddingDim;
        Dense0 = new Linear(source, $"{name}.0", channels, embeddingDim);
        Dense1 = new Linear(source, $"{name}.1", embeddingDim, embeddingDim);
    }

    /// <summary>Every parameter spec, in creation order.</summary>
    public static ParameterSpec[] Specs(string name, int channels, int embeddingDim) =>
        [.. Linear.Specs($"{name}.0", channels, embeddingDim), .. Linear.Specs($"{name}.1", embeddingDim, embeddingDim)];

    /// <summary>Multiply-adds ×2 of the two linears, per image.</summary>
    public static double Flops(int channels, int embeddingDim) =>
        Linear.Flops(channels, embeddingDim) + Linear.Flops(embeddingDim, embeddingDim);

    /// <summary>The dotted prefix.</summary>
    public string Name { get; }

    /// <summary>Sinusoid length ch.</summary>
    public int Channels { get; }

    /// <summary>Output width 4ch.</summary>
    public int EmbeddingDim { get; }

    /// <summary>ch → 4ch.</summary>
    public Linear Dense0 { get; }

    /// <summary>4ch → 4ch.</summary>
    public Linear Dense1 { get; }

    /// <summary>t [n] (0-based steps) → temb [n, 4ch] (not yet passed through SiLU).</summary>
    public Tensor Forward(Tape tape, ArrayView<int> t, int n)
    {
        var s = tape.TimestepSinusoid(t, n, Channels);
        return Dense1.Forward(tape, tape.Silu(Dense0.Forward(tape, s)));
    }
}
