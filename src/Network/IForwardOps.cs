namespace IlgpuDdpm.Network;

/// <summary>
/// The operations the U-Net's forward pass is written in, over values of type <typeparamref name="T"/>.
/// Every module's <c>Forward</c> is written once against this interface and run two ways:
/// on a tape (<see cref="TapeOps"/>: T is a device tensor [N, …]; it computes) and on shapes
/// (<see cref="UNetLayout"/>'s planner: T is the shape of one image; it allocates nothing and derives the
/// parameter names and shapes, the FLOPs, the dropout draws and the summary rows). So the architecture
/// is described by the module tree alone.
/// </summary>
public interface IForwardOps<T>
{
    /// <summary>The sinusoidal embedding [N, dim] of the timesteps of this pass (DESIGN.md §4).</summary>
    T TimestepSinusoid(int dim);

    /// <summary>x [N,Cin,H,W] → [N,Cout,Ho,Wo] with the layer's weight and bias.</summary>
    T Conv2d(Conv2d layer, T x);

    /// <summary>
    /// conv(x) + addend, the add fused into the convolution: the addend has the output's shape (a residual) or is
    /// [N, Cout], broadcast over H, W (the time embedding). It is computed by <paramref name="addend"/>, which runs after
    /// the convolution's parameters are read, so the parameter order stays that of the conv followed by the add.
    /// </summary>
    T Conv2dAdd(Conv2d layer, T x, Func<T> addend);

    /// <summary>x [N,In] → [N,Out] = x·Wᵀ + b.</summary>
    T Linear(Linear layer, T x);

    /// <summary>Group normalisation with the layer's γ and β, same shape.</summary>
    T GroupNorm(GroupNorm layer, T x);

    /// <summary>The config's activation (<see cref="UNetConfig.Activation"/>), same shape: the only place the network names it.</summary>
    T Activate(T x);

    /// <summary>
    /// <c>Activate(GroupNorm(layer, x))</c>, then inverted dropout with probability <paramref name="dropout"/> (none at 0,
    /// and identity unless training), which a device runs as one fused op. A call with dropout draws x's length in numbers.
    /// </summary>
    T GroupNormActivate(GroupNorm layer, T x, float dropout);

    /// <summary>Nearest-neighbour ×2: [N,C,H,W] → [N,C,2H,2W].</summary>
    T Upsample2x(T x);

    /// <summary>Channel concat: [N,Ca,H,W] ++ [N,Cb,H,W] → [N,Ca+Cb,H,W].</summary>
    T Concat(T a, T b);

    /// <summary>Single-head attention over the H·W positions: q, k, v [N,C,H,W] → [N,C,H,W], a[:, i] = Σ_j softmax_j(q_iᵀk_j/√C) v[:, j].</summary>
    T Attention(T q, T k, T v);

    /// <summary>Marks <paramref name="output"/> as the output of <paramref name="layer"/> (one row of the summary) and returns it.</summary>
    T Layer(UNetLayer layer, T output);
}
