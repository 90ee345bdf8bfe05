using IlgpuDdpm.Network;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Network;

[TestFixture]
public sealed class UNetConfigTests
{
    [Test]
    public void PresetsMatchTheDesignTable()
    {
        var tiny = UNetConfig.FromPreset("tiny", 28, 1);
        Assert.That((tiny.Channels, tiny.NumResBlocks, tiny.Groups, tiny.Dropout), Is.EqualTo((16, 1, 4, 0f)));
        Assert.That(tiny.ChannelMultipliers, Is.EqualTo(new[] { 1, 2 }));
        Assert.That(tiny.AttentionResolutions, Is.EqualTo(new[] { 14 }), "tiny: attention at the lowest resolution 28/2");
        Assert.That(tiny.TimeEmbeddingDim, Is.EqualTo(64));

        var small = UNetConfig.FromPreset("small", 28, 1);
        Assert.That((small.Channels, small.NumResBlocks, small.Groups, small.Dropout), Is.EqualTo((32, 2, 8, 0.1f)));
        Assert.That(small.ChannelMultipliers, Is.EqualTo(new[] { 1, 2, 2 }));
        Assert.That(small.AttentionResolutions, Is.EqualTo(new[] { 7 }), "small: attention at the lowest resolution 28/4");

        var cifar = UNetConfig.FromPreset("ddpm-cifar10", 32, 3);
        Assert.That((cifar.Channels, cifar.NumResBlocks, cifar.Groups, cifar.Dropout), Is.EqualTo((128, 2, 32, 0.1f)));
        Assert.That(cifar.ChannelMultipliers, Is.EqualTo(new[] { 1, 2, 2, 2 }));
        Assert.That(cifar.AttentionResolutions, Is.EqualTo(new[] { 16 }));

        Assert.That(UNetConfig.FromPreset("tiny", 16, 3).AttentionResolutions, Is.EqualTo(new[] { 8 }));
        Assert.That(UNetConfig.FromPreset(" Tiny ", 28, 1), Is.EqualTo(tiny), "preset names are case- and space-insensitive");
    }

    private static IEnumerable<TestCaseData> InvalidConfigs()
    {
        var tiny = UNetConfig.Tiny(28, 1);
        yield return new TestCaseData(() => UNetConfig.FromPreset("small", 30, 1), "image size 30 must be divisible by 4 for 3 levels").SetName("ImageSizeNotDivisible");
        yield return new TestCaseData(() => UNetConfig.FromPreset("huge", 28, 1), "unknown model preset 'huge': expected tiny, small, ddpm-cifar10").SetName("UnknownPreset");
        yield return new TestCaseData(() => (tiny with { ImageSize = 0 }).Validate(), "image size must be positive, got 0").SetName("ZeroImageSize");
        yield return new TestCaseData(() => (tiny with { InChannels = 0 }).Validate(), "in channels must be positive, got 0").SetName("ZeroInChannels");
        yield return new TestCaseData(() => (tiny with { Channels = 6, Groups = 3 }).Validate(), null).SetName("Ch6Groups3IsFine");
        yield return new TestCaseData(() => (tiny with { Channels = 7 }).Validate(), "ch must be even and at least 4").SetName("OddCh");
        yield return new TestCaseData(() => (tiny with { Channels = 20, Groups = 8 }).Validate(), "ch 20 must be divisible by groups 8").SetName("ChNotDivisibleByGroups");
        yield return new TestCaseData(() => (tiny with { ChannelMultipliers = [1, 3], Channels = 16, Groups = 8 }).Validate(), null).SetName("OddMultiplierIsFine");
        yield return new TestCaseData(() => (tiny with { ChannelMultipliers = [] }).Validate(), "channel multipliers must list at least one level").SetName("NoLevels");
        yield return new TestCaseData(() => (tiny with { ChannelMultipliers = [1, 0] }).Validate(), "channel multiplier of level 1 must be positive, got 0").SetName("ZeroMultiplier");
        yield return new TestCaseData(() => (tiny with { NumResBlocks = 0 }).Validate(), "res blocks per level must be at least 1, got 0").SetName("NoResBlocks");
        yield return new TestCaseData(() => (tiny with { Groups = 0 }).Validate(), "groups must be positive, got 0").SetName("ZeroGroups");
        yield return new TestCaseData(() => (tiny with { Dropout = 1f }).Validate(), "dropout must be in [0, 1), got 1").SetName("DropoutOne");
        yield return new TestCaseData(() => (tiny with { Dropout = float.NaN }).Validate(), "dropout must be in [0, 1), got NaN").SetName("DropoutNaN");
        yield return new TestCaseData(() => (tiny with { AttentionResolutions = [10] }).Validate(),
            "attention resolution 10 is not the resolution of any level (levels: 28, 14)").SetName("AttentionAtMissingResolution");
        yield return new TestCaseData(() => UNetConfig.FromPreset("ddpm-cifar10", 8, 3),
            "attention resolution 16 is not the resolution of any level (levels: 8, 4, 2, 1)").SetName("CifarPresetOnTooSmallImages");
    }

    [TestCaseSource(nameof(InvalidConfigs))]
    public void InvalidConfigsAreRefusedInOneClearLine(Func<UNetConfig> make, string? expected)
    {
        if (expected is null)
        {
            Assert.That(make, Throws.Nothing);
            return;
        }
        var e = Assert.Throws<ArgumentException>(() => make())!;
        Assert.That(e.Message, Does.Contain(expected));
        Assert.That(e.Message, Does.Not.Contain("\n"), "one line");
    }

    [Test]
    public void ValidationErrorIsNullForEveryPreset()
    {
        foreach (var name in UNetConfig.PresetNames)
            foreach (var size in new[] { 16, 32, 64 })
                Assert.That(UNetConfig.FromPreset(name, size, 3).ValidationError(), Is.Null, $"{name} at {size}");
    }

    [Test]
    public void JsonRoundTripsAndUsesTheReferenceNames()
    {
        var tiny = UNetConfig.Tiny(28, 1);
        Assert.That(tiny.ToJson(), Is.EqualTo(
            "{\"image_size\":28,\"in_channels\":1,\"ch\":16,\"ch_mult\":[1,2],\"num_res_blocks\":1,\"attn_resolutions\":[14],\"groups\":4,\"dropout\":0}"));
        foreach (var name in UNetConfig.PresetNames)
        {
            var c = UNetConfig.FromPreset(name, 32, 3);
            var back = UNetConfig.FromJson(c.ToJson());
            Assert.That(back, Is.EqualTo(c), name);
            Assert.That(back.GetHashCode(), Is.EqualTo(c.GetHashCode()), name);
            Assert.That(back.ToJson(), Is.EqualTo(c.ToJson()), name);
        }
        Assert.That(UNetConfig.Small(28, 1), Is.Not.EqualTo(UNetConfig.Small(28, 1) with { ChannelMultipliers = [1, 2, 4] }));
    }

    [Test]
    public void TheActivationIsSiluByDefaultAndOptionalInJson()
    {
        var tiny = UNetConfig.Tiny(28, 1);
        Assert.That(tiny.Activation, Is.EqualTo(Activation.Silu), "the DDPM paper's nonlinearity");
        Assert.That(tiny.ToJson(), Does.Not.Contain("activation"), "SiLU configs keep the checkpoint format");
        var named = UNetConfig.FromJson(tiny.ToJson().TrimEnd('}') + ",\"activation\":\" SiLU \"}");
        Assert.That(named, Is.EqualTo(tiny), "the field may name the default, in any case");
        Assert.That(ModelSummary.For(tiny).Rows[0].Description, Is.EqualTo("sinusoid 16 → Linear → SiLU → Linear 64"));
        Assert.That(ModelSummary.For(tiny).Rows[^1].Description, Is.EqualTo("GroupNorm, SiLU, Conv3x3 16→1"));
        var invalid = tiny with { Activation = (Activation)99 };
        Assert.That(invalid.ValidationError(), Is.EqualTo("activation 99 is not one of silu, gelu"));
        Assert.That(invalid, Is.Not.EqualTo(tiny));
    }

    [Test]
    public void GeluIsAConfigOptionThatRoundTripsThroughJson()
    {
        var gelu = UNetConfig.Tiny(28, 1) with { Activation = Activation.Gelu };
        Assert.That(gelu.ToJson(), Does.Contain("\"activation\":\"gelu\""));
        Assert.That(UNetConfig.FromJson(gelu.ToJson()), Is.EqualTo(gelu));
        Assert.That(ModelSummary.For(gelu).Rows[0].Description, Is.EqualTo("sinusoid 16 → Linear → GELU → Linear 64"));
    }

    [TestCase("{\"image_size\":28}", "missing required properties")]
    [TestCase("{\"image_size\":28,\"in_channels\":1,\"ch\":16,\"ch_mult\":[1,2],\"num_res_blocks\":1,\"attn_resolutions\":[14],\"groups\":4,\"dropout\":0,\"heads\":4}", "heads")]
    [TestCase("{\"image_size\":30,\"in_channels\":1,\"ch\":16,\"ch_mult\":[1,2,2],\"num_res_blocks\":1,\"attn_resolutions\":[],\"groups\":4,\"dropout\":0}", "image size 30 must be divisible by 4 for 3 levels")]
    [TestCase("{\"image_size\":28,\"in_channels\":1,\"ch\":16,\"ch_mult\":null,\"num_res_blocks\":1,\"attn_resolutions\":[14],\"groups\":4,\"dropout\":0}", "ch_mult and attn_resolutions must be arrays")]
    [TestCase("{\"image_size\":28,\"in_channels\":1,\"ch\":16,\"ch_mult\":[1,2],\"num_res_blocks\":1,\"attn_resolutions\":[14],\"groups\":4,\"dropout\":0,\"activation\":\"relu6\"}", "activation 'relu6' is not one of silu")]
    [TestCase("not json", "invalid model config JSON")]
    [TestCase("null", "invalid model config JSON: null")]
    public void BadJsonIsRefusedInOneLine(string json, string expected)
    {
        var e = Assert.Throws<ArgumentException>(() => UNetConfig.FromJson(json))!;
        Assert.That(e.Message, Does.Contain(expected));
        Assert.That(e.Message, Does.Not.Contain("\n"));
    }
}
