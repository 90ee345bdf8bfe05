using BenchmarkDotNet.Attributes;
using IlgpuDdpm.Diffusion;
using IlgpuDdpm.Diffusion.Schedules;
using IlgpuDdpm.Kernels.Device;
using IlgpuDdpm.Network;

namespace IlgpuDdpm.Bench;

/// <summary>
/// Whole-model throughput for each preset: one training step (<see cref="Trainer.TrainStep"/>: upload the batch,
/// noising, U-Net forward, L_simple, backward, global-norm clipping, Adam and EMA over every parameter, loss read
/// back) on a random batch, in images/s; and DDIM sampling (η = 0, <see cref="SamplingSteps"/> steps, the whole
/// batch at once, images copied back) in images/s. FLOPs from <see cref="ModelSummary"/>: a training step ≈ 3 ×
/// forward per image, sampling = steps × forward per image; set against the multiply-add peak.
/// </summary>
[NetworkJob]
public class NetworkBenchmarks
{
    private ComputeDevice device = null!;
    private UNet model = null!;
    private GaussianDiffusion diffusion = null!;
    private Trainer? trainer;
    private float[] batch = [];
    private SampleOptions sampleOptions = null!;

    /// <summary>DDIM steps per sample: 2 in --quick, 10 in a full run.</summary>
    public static int SamplingSteps => Settings.Quick ? 2 : 10;

    /// <summary>One case per preset, batch <see cref="Settings.Batch"/>.</summary>
    public static IEnumerable<BenchCase> Cases() => PresetShape.Active.Select(p =>
    {
        int b = Settings.Batch;
        double forward = p.Summary.TotalGFlop * 1e9;
        return (BenchCase)new NetworkCase($"{p.Tag} {p.ImageSize}x{p.ImageSize}x{p.InChannels} batch {b}", p, method => method == nameof(TrainStep)
            ? new Work(3 * forward * b, 0, b, 1)
            : new Work(SamplingSteps * forward * b, 0, b, SamplingSteps));
    });

    /// <summary>The case.</summary>
    [ParamsSource(nameof(Cases))]
    public BenchCase Case { get; set; } = null!;

    /// <summary>Builds the model (seeded init), the diffusion, the trainer and a random batch in [−1, 1].</summary>
    [GlobalSetup]
    public void Setup()
    {
        device = Settings.BindDevice();
        var preset = ((NetworkCase)Case).Preset;
        int b = Settings.Batch;
        model = new UNet(device, preset.Config, seed: 1);
        diffusion = new GaussianDiffusion(device, NoiseSchedule.Linear());
        trainer = new Trainer(model, diffusion, new TrainingOptions { BatchSize = b, WarmupSteps = 1, Seed = 1 });
        var random = new Random(1);
        batch = new float[b * preset.InChannels * preset.ImageSize * preset.ImageSize];
        for (int i = 0; i < batch.Length; i++) batch[i] = 2f * random.NextSingle() - 1f;
        sampleOptions = new SampleOptions { Count = b, Sampler = SamplerKind.Ddim, Steps = SamplingSteps, Eta = 0, Seed = 1 };
        device.Synchronize();
    }

    /// <summary>Frees the trainer, model and diffusion.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        trainer?.Dispose();
        trainer = null;
        diffusion.Dispose();
        model.Dispose();
    }

    /// <summary>One optimisation step on the batch (images/s).</summary>
    [Benchmark]
    public void TrainStep()
    {
        trainer!.TrainStep(batch);
        device.Synchronize();
    }

    /// <summary>DDIM sampling of a batch of images (images/s; Time/launch = per denoising step).</summary>
    [Benchmark]
    public void Sample()
    {
        diffusion.Sample(model, sampleOptions);
        device.Synchronize();
    }

    private sealed class NetworkCase(string name, PresetShape preset, Func<string, Work> work) : BenchCase(name)
    {
        public PresetShape Preset { get; } = preset;
        public override Work WorkOf(string method) => work(method);
    }
}
