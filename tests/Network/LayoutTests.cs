using IlgpuDdpm.Network;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Network;

/// <summary>The planned architecture: parameter counts, names, shapes, the skip stack, the summary.</summary>
[TestFixture]
public sealed class LayoutTests
{
    [Test]
    public void DdpmCifar10HasThePapers35_7MParameters()
    {
        var layout = UNetLayout.Plan(UNetConfig.DdpmCifar10(32, 3));
        TestContext.Out.WriteLine($"ddpm-cifar10 3×32×32: {layout.ParameterCount:N0} parameters");
        // DDPM paper (Ho et al. 2020, Table/Appendix B): 35.7M; the reference PyTorch port counts 35,746,307.
        Assert.That(layout.ParameterCount, Is.EqualTo(35_700_000).Within(100_000));
        Assert.That(layout.ParameterCount, Is.EqualTo(35_746_307));
    }

    [Test]
    public void TinyAndSmallCountsArePinned()
    {
        long tiny = UNetLayout.Plan(UNetConfig.Tiny(28, 1)).ParameterCount;
        long small = UNetLayout.Plan(UNetConfig.Small(28, 1)).ParameterCount;
        long tinyRgb = UNetLayout.Plan(UNetConfig.Tiny(32, 3)).ParameterCount;
        TestContext.Out.WriteLine($"tiny 1×28×28: {tiny:N0}; small 1×28×28: {small:N0}; tiny 3×32×32: {tinyRgb:N0}");
        Assert.That(tiny, Is.EqualTo(176_849));
        Assert.That(small, Is.EqualTo(1_623_169));
        // in_channels only changes the head conv (in·ch·9) and the tail conv (ch·in·9 + in).
        Assert.That(tinyRgb - tiny, Is.EqualTo(2 * 16 * 9 + 2 * 16 * 9 + 2));
    }

    [Test]
    public void EveryNameIsUniqueAndDotted()
    {
        foreach (var name in UNetConfig.PresetNames)
        {
            var specs = UNetLayout.Plan(UNetConfig.FromPreset(name, 32, 3)).Parameters;
            Assert.That(specs.Select(s => s.Name), Is.Unique, name);
            foreach (var s in specs)
                Assert.That(s.Name, Does.Match(@"^[a-z_0-9]+(\.[a-z_0-9]+)*\.(weight|bias)$"), name);
        }
    }

    // Pinned names and shapes: checkpoints depend on them (docs/network.md).
    [TestCase("temb.0.weight", new[] { 64, 16 })]
    [TestCase("temb.1.bias", new[] { 64 })]
    [TestCase("head.weight", new[] { 16, 1, 3, 3 })]
    [TestCase("down.0.block.0.norm1.weight", new[] { 16 })]
    [TestCase("down.0.block.0.conv1.weight", new[] { 16, 16, 3, 3 })]
    [TestCase("down.0.block.0.temb_proj.weight", new[] { 16, 64 })]
    [TestCase("down.0.block.0.conv2.bias", new[] { 16 })]
    [TestCase("down.0.downsample.weight", new[] { 16, 16, 3, 3 })]
    [TestCase("down.1.block.0.skip.weight", new[] { 32, 16, 1, 1 })]
    [TestCase("down.1.attn.0.norm.bias", new[] { 32 })]
    [TestCase("down.1.attn.0.q.weight", new[] { 32, 32, 1, 1 })]
    [TestCase("down.1.attn.0.proj_out.weight", new[] { 32, 32, 1, 1 })]
    [TestCase("mid.block1.conv1.weight", new[] { 32, 32, 3, 3 })]
    [TestCase("mid.attn.k.weight", new[] { 32, 32, 1, 1 })]
    [TestCase("mid.block2.norm2.weight", new[] { 32 })]
    [TestCase("up.1.block.0.conv1.weight", new[] { 32, 64, 3, 3 })]
    [TestCase("up.1.block.1.skip.weight", new[] { 32, 48, 1, 1 })]
    [TestCase("up.1.attn.1.v.bias", new[] { 32 })]
    [TestCase("up.1.upsample.weight", new[] { 32, 32, 3, 3 })]
    [TestCase("up.0.block.0.skip.weight", new[] { 16, 48, 1, 1 })]
    [TestCase("up.0.block.1.conv1.weight", new[] { 16, 32, 3, 3 })]
    [TestCase("tail.norm.weight", new[] { 16 })]
    [TestCase("tail.conv.weight", new[] { 1, 16, 3, 3 })]
    public void TinyNamesAndShapesArePinned(string name, int[] shape)
    {
        var specs = UNetLayout.Plan(UNetConfig.Tiny(28, 1)).Parameters;
        var spec = specs.SingleOrDefault(s => s.Name == name);
        Assert.That(spec, Is.Not.Null, $"{name} missing");
        Assert.That(spec!.Shape, Is.EqualTo(shape), name);
    }

    [Test]
    public void TinyHasNoParametersBeyondThePinnedPatternsAndAFixedOrder()
    {
        var specs = UNetLayout.Plan(UNetConfig.Tiny(28, 1)).Parameters;
        Assert.That(specs[0].Name, Is.EqualTo("temb.0.weight"));
        Assert.That(specs[1].Name, Is.EqualTo("temb.0.bias"));
        Assert.That(specs[4].Name, Is.EqualTo("head.weight"));
        Assert.That(specs[6].Name, Is.EqualTo("down.0.block.0.norm1.weight"));
        Assert.That(specs[^2].Name, Is.EqualTo("tail.conv.weight"));
        Assert.That(specs[^1].Name, Is.EqualTo("tail.conv.bias"));
        Assert.That(specs.Any(s => s.Name.StartsWith("down.0.attn")), Is.False, "no attention at 28×28");
        Assert.That(specs.Any(s => s.Name.StartsWith("down.1.downsample")), Is.False, "no downsample after the last level");
        Assert.That(specs.Any(s => s.Name.StartsWith("up.0.upsample")), Is.False, "no upsample after level 0");
        Assert.That(specs.Any(s => s.Name.StartsWith("down.0.block.0.skip")), Is.False, "no 1×1 skip when in = out");
        Assert.That(specs.Count(s => s.Name.StartsWith("up.1.block.")), Is.EqualTo(2 * 12), "num_res_blocks + 1 blocks, each with a skip conv");
        Assert.That(specs.Count, Is.EqualTo(specs.Select(s => s.Name).Distinct().Count()));
    }

    [Test]
    public void Cifar10NamesMatchTheReferenceStructure()
    {
        var specs = UNetLayout.Plan(UNetConfig.DdpmCifar10(32, 3)).Parameters.ToDictionary(s => s.Name);
        // up.1.block.2 takes h (256) + the skip pushed by down.0.downsample (128), as in the reference code.
        Assert.That(specs["up.1.block.2.skip.weight"].Shape, Is.EqualTo(new[] { 256, 384, 1, 1 }));
        Assert.That(specs["up.3.block.0.conv1.weight"].Shape, Is.EqualTo(new[] { 256, 512, 3, 3 }));
        Assert.That(specs["up.1.upsample.weight"].Shape, Is.EqualTo(new[] { 256, 256, 3, 3 }));
        Assert.That(specs.ContainsKey("up.0.upsample.weight"), Is.False);
        Assert.That(specs["down.1.attn.1.proj_out.weight"].Shape, Is.EqualTo(new[] { 256, 256, 1, 1 }), "attention at 16×16 = level 1");
        Assert.That(specs.Keys.Any(k => k.StartsWith("down.0.attn") || k.StartsWith("down.2.attn")), Is.False);
        Assert.That(specs["temb.0.weight"].Shape, Is.EqualTo(new[] { 512, 128 }));
        Assert.That(specs["tail.conv.weight"].Shape, Is.EqualTo(new[] { 3, 128, 3, 3 }));
    }

    [Test]
    public void SkipStackBalancesForEveryPresetAndManyShapes()
    {
        foreach (var name in UNetConfig.PresetNames)
            foreach (var size in new[] { 16, 32, 64 })
                Assert.That(() => UNetLayout.Plan(UNetConfig.FromPreset(name, size, 3)), Throws.Nothing, $"{name} {size}");
        var rng = new System.Random(5);
        for (int trial = 0; trial < 40; trial++)
        {
            int levels = rng.Next(1, 5);
            var config = new UNetConfig
            {
                ImageSize = 8 << (levels - 1), InChannels = rng.Next(1, 4), Channels = 8,
                ChannelMultipliers = Enumerable.Range(0, levels).Select(_ => rng.Next(1, 4)).ToArray(),
                NumResBlocks = rng.Next(1, 4), AttentionResolutions = [8], Groups = 4,
            };
            var layout = UNetLayout.Plan(config);
            // Every up-path ResBlock's skip must come from a pushed tensor of the same resolution; the
            // count of pops equals the count of pushes: 1 + L·nrb + (L−1) = L·(nrb+1).
            int ups = layout.Layers.Count(l => l.Name.StartsWith("up.") && l.Kind == LayerKind.ResBlock);
            Assert.That(ups, Is.EqualTo(levels * (config.NumResBlocks + 1)));
            Assert.That(layout.Layers[^1].OutputShape, Is.EqualTo(new[] { config.InChannels, config.ImageSize, config.ImageSize }));
        }
    }

    [Test]
    public void TheLayoutIsReadOffTheModuleTree()
    {
        foreach (var name in UNetConfig.PresetNames)
        {
            var modules = new UNetModules(UNetConfig.FromPreset(name, 32, 3));
            var layout = UNetLayout.Plan(modules);
            // One row per layer of the tree, the time embedding first, in the tree's order.
            Assert.That(layout.Layers.Select(l => l.Name), Is.EqualTo(modules.Layers.Select(l => l.Name).Prepend("temb")), name);
            // Each row holds exactly the parameters under its own name, in the order the pass read them.
            foreach (var row in layout.Layers)
                Assert.That(row.Parameters.All(p => p.Name.StartsWith(row.Name + ".")), Is.True, $"{name} {row.Name}");
            var head = modules.Layers.OfType<Head>().Single();
            Assert.That(layout.Parameters[4], Is.SameAs(head.Conv.Weight), "the specs are the modules' own, not copies");
            Assert.That(layout.Layers.Where(l => l.Kind == LayerKind.ResBlock).Select(l => l.SkipChannels),
                Is.EqualTo(modules.Layers.OfType<ResBlock>().Select(b => b.SkipChannels)), name);
        }
    }

    [Test]
    public void SummaryCountsMatchTheLayoutAndHandFormulas()
    {
        var config = UNetConfig.Tiny(28, 1);
        var summary = ModelSummary.For(config);
        Assert.That(summary.TotalParameters, Is.EqualTo(176_849));
        var head = summary.Rows.Single(r => r.Name == "head");
        Assert.That(head.GFlop * 1e9, Is.EqualTo(2.0 * 16 * 1 * 9 * 28 * 28).Within(1e-3));
        Assert.That(head.OutputShape, Is.EqualTo(new[] { 16, 28, 28 }));
        var attn = summary.Rows.Single(r => r.Name == "mid.attn");
        double l = 14 * 14;
        Assert.That(attn.GFlop * 1e9, Is.EqualTo(4 * 2.0 * 32 * 32 * l + 2 * 2.0 * 32 * l * l).Within(1e-3));
        Assert.That(attn.Parameters, Is.EqualTo(2 * 32 + 4 * (32 * 32 + 32)));
        var up = summary.Rows.Single(r => r.Name == "up.1.block.1");
        Assert.That(up.Description, Is.EqualTo("ResBlock 32+16→32"));
        // Totals from an independent count (a separate Python walk of the same architecture).
        Assert.That(summary.TotalGFlop * 1e9, Is.EqualTo(117_799_936).Within(1));
        Assert.That(ModelSummary.For(UNetConfig.Small(28, 1)).TotalGFlop * 1e9, Is.EqualTo(554_397_184).Within(1));
        Assert.That(ModelSummary.For(UNetConfig.DdpmCifar10()).TotalGFlop * 1e9, Is.EqualTo(12_443_713_536).Within(1));
        var text = summary.ToString();
        TestContext.Out.WriteLine(text);
        Assert.That(text, Does.Contain("total"));
        Assert.That(text, Does.Contain("176,849"));
        Assert.That(text.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length, Is.EqualTo(summary.Rows.Count + 4));
    }
}
