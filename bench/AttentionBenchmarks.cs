using BenchmarkDotNet.Attributes;
using IlgpuDdpm.Autodiff;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Kernels.Random;

namespace IlgpuDdpm.Bench;

/// <summary>
/// The single-head self-attention op (<see cref="AttentionOps.Attention"/>, no gradient recorded) on q, k, v
/// [B, C, L]: scores qᵀk/√C, softmax over the keys, v·wᵀ. FLOPs counted: the two GEMMs, 2 × 2·B·L²·C (the
/// softmax's ≈ 5·B·L² is not counted). Cases: small C 64 at L 49 (7×7, its attention resolution) and L 196
/// (14×14); ddpm-cifar10 C 256 at L 256 (16×16) in a full run.
/// </summary>
[KernelJob]
public class AttentionBenchmarks
{
    private ComputeDevice device = null!;
    private Tape tape = null!;
    private Tensor q = null!, k = null!, v = null!;

    /// <summary>The cases above.</summary>
    public static IEnumerable<BenchCase> Cases()
    {
        int batch = Settings.Batch;
        var list = new List<(int C, int Side, string Tag)> { (64, 7, "small"), (64, 14, "small") };
        if (!Settings.Quick) list.Add((256, 16, "cifar"));
        return list.Select(e =>
        {
            int l = e.Side * e.Side;
            return (BenchCase)new AttentionCase($"{e.Tag} C{e.C} L{l} ({e.Side}x{e.Side}) x{batch}", e.C, l);
        });
    }

    /// <summary>The case.</summary>
    [ParamsSource(nameof(Cases))]
    public BenchCase Case { get; set; } = null!;

    /// <summary>Makes q, k, v and the tape.</summary>
    [GlobalSetup]
    public void Setup()
    {
        device = Settings.BindDevice();
        var shape = (AttentionCase)Case;
        int c = shape.Channels, l = shape.Positions, n = Settings.Batch;
        tape = new Tape(device);
        q = Tensor.Create(device, n, c, l);
        k = Tensor.Create(device, n, c, l);
        v = Tensor.Create(device, n, c, l);
        var random = device.Kernels<RandomKernels>();
        random.Normal(q.View, new PhiloxKey(1, 1, 0));
        random.Normal(k.View, new PhiloxKey(1, 2, 0));
        random.Normal(v.View, new PhiloxKey(1, 3, 0));
        device.Synchronize();
    }

    /// <summary>Frees the tensors.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        tape.Clear();
        q.Dispose(); k.Dispose(); v.Dispose();
    }

    /// <summary>Attention forward, outputs released to the pool after each launch (GFLOP/s of its two GEMMs).</summary>
    [Benchmark]
    public void Forward()
    {
        using (tape.NoGrad())
        {
            for (int r = 0; r < Settings.Launches; r++)
            {
                tape.Attention(q, k, v);
                tape.Clear();
            }
        }
        device.Synchronize();
    }

    internal sealed class AttentionCase(string name, int channels, int positions) : BenchCase(name)
    {
        public int Channels { get; } = channels;
        public int Positions { get; } = positions;
        public override Work WorkOf(string method) => Work.Compute(2.0 * 2.0 * Settings.Batch * Positions * Positions * Channels, Settings.Launches);
    }
}
