using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Engines;
using BenchmarkDotNet.Jobs;
using Perfolizer.Horology;

namespace IlgpuDdpm.Bench;

/// <summary>
/// The job for whole-model benchmarks (seconds per invocation on the CPU accelerator): BenchmarkDotNet's
/// Monitoring strategy (no pilot stage, no overhead evaluation, one invocation per iteration). --quick: 1 warm-up and
/// 2 measured iterations on the CPU accelerator, 2 and 5 on a GPU (where a step takes milliseconds); full run: 2 and 5
/// on the CPU accelerator, 2 and 10 on a GPU.
/// </summary>
[AttributeUsage(AttributeTargets.Class)]
public sealed class NetworkJobAttribute : Attribute, IConfigSource
{
    /// <inheritdoc/>
    public IConfig Config => ManualConfig.CreateEmpty().AddJob(Program.BaseJob()
        .WithStrategy(RunStrategy.Monitoring)
        .WithWarmupCount(Settings.Quick && Settings.Device.IsCpu ? 1 : 2)
        .WithIterationCount(Settings.Device.IsCpu ? (Settings.Quick ? 2 : 5) : (Settings.Quick ? 5 : 10))
        .WithId(Settings.Quick ? "quick-network" : "full-network"));
}

/// <summary>
/// The job for kernel benchmarks: <see cref="Program.BaseJob"/> with, in --quick, 1 warm-up and 3 measured
/// iterations of ≥ 100 ms each (BenchmarkDotNet's pilot stage picks the invocations per iteration); in a full run
/// 3 and 10 of ≥ 250 ms.
/// </summary>
[AttributeUsage(AttributeTargets.Class)]
public sealed class KernelJobAttribute : Attribute, IConfigSource
{
    /// <inheritdoc/>
    public IConfig Config => ManualConfig.CreateEmpty().AddJob(Program.BaseJob()
        .WithWarmupCount(Settings.Quick ? 1 : 3)
        .WithIterationCount(Settings.Quick ? 3 : 10)
        .WithIterationTime(TimeInterval.FromMilliseconds(Settings.Quick ? 100 : 250))
        .WithId(Settings.Quick ? "quick" : "full"));
}
