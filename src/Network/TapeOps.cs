using ILGPU;
using IlgpuDdpm.Autodiff;
using IlgpuDdpm.Kernels.Random;

namespace IlgpuDdpm.Network;

/// <summary>
/// The forward ops on a <see cref="Tape"/>: each one is the tape op of the same name (which records its
/// backward), with the parameters of <paramref name="parameters"/> looked up by spec name. The
/// activation is the config's (<see cref="Activations.Apply"/>); dropout call b (forward order) draws
/// from <paramref name="dropoutKey"/> advanced by the lengths the calls before it have in the whole batch of
/// <paramref name="globalBatch"/> images. This pass may hold only a shard of that batch (data-parallel
/// training): images <paramref name="firstImage"/>.. of it, which draw exactly the numbers they would in
/// the whole batch. A plain pass is the shard 0.. of a batch of its own size.
/// </summary>
internal sealed class TapeOps(Tape tape, Func<string, Parameter> parameters, Activation activation,
                              ArrayView<int> timesteps, int batch, PhiloxKey dropoutKey,
                              int globalBatch, int firstImage) : IForwardOps<Tensor>
{
    private PhiloxKey key = dropoutKey;

    public Tensor TimestepSinusoid(int dim) => tape.TimestepSinusoid(timesteps, batch, dim);

    public Tensor Conv2d(Conv2d layer, Tensor x) =>
        tape.Conv2d(x, parameters(layer.Weight.Name), parameters(layer.Bias.Name), layer.Stride, layer.Padding);

    public Tensor Conv2dAdd(Conv2d layer, Tensor x, Func<Tensor> addend)
    {
        var (weight, bias) = (parameters(layer.Weight.Name), parameters(layer.Bias.Name));
        return tape.Conv2d(x, weight, bias, addend(), layer.Stride, layer.Padding); // the epilogue reads the addend: it is computed first
    }

    public Tensor Linear(Linear layer, Tensor x) => tape.Linear(x, parameters(layer.Weight.Name), parameters(layer.Bias.Name));

    public Tensor GroupNorm(GroupNorm layer, Tensor x) =>
        tape.GroupNorm(x, parameters(layer.Weight.Name), parameters(layer.Bias.Name), layer.Groups, Network.GroupNorm.Epsilon);

    public Tensor Activate(Tensor x) => tape.Apply(activation, x);

    public Tensor GroupNormActivate(GroupNorm layer, Tensor x, float dropout)
    {
        var (gamma, beta) = (parameters(layer.Weight.Name), parameters(layer.Bias.Name));
        if (dropout == 0f) return tape.GroupNormThenApply(activation, x, gamma, beta, layer.Groups, Network.GroupNorm.Epsilon);
        long perImage = x.Length / batch;
        var y = tape.GroupNormThenApply(activation, x, gamma, beta, layer.Groups, Network.GroupNorm.Epsilon, dropout, key.Advance(perImage * firstImage));
        key = key.Advance(perImage * globalBatch);
        return y;
    }

    public Tensor Upsample2x(Tensor x) => tape.Upsample2x(x);

    public Tensor Concat(Tensor a, Tensor b) => tape.Concat(a, b);

    public Tensor Attention(Tensor q, Tensor k, Tensor v)
    {
        int n = q.Dim(0), c = q.Dim(1), height = q.Dim(2), width = q.Dim(3), l = height * width;
        var a = tape.Attention(tape.Reshape(q, n, c, l), tape.Reshape(k, n, c, l), tape.Reshape(v, n, c, l));
        return tape.Reshape(a, n, c, height, width);
    }

    public Tensor Layer(UNetLayer layer, Tensor output) => output;
}
