using System.Text.Json;
using IlgpuDdpm.Diffusion.Data;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Data;

[TestFixture]
public sealed class BatchSamplerTests
{
    // Image i of the data set is a 1×2×3 ramp whose values identify i and the column, so a flip is visible.
    private static ImageDataset Dataset(int count)
    {
        var data = new float[count * 6];
        for (int i = 0; i < count; i++)
            for (int p = 0; p < 6; p++) data[i * 6 + p] = i * 0.01f + (p % 3) * 0.001f;
        return new ImageDataset(data, count, 1, 2, 3, "test");
    }

    private static int IdOf(ReadOnlySpan<float> image) => (int)MathF.Round(MathF.Min(image[0], image[2]) * 100);

    [Test]
    public void SameSeedSameBatchesOtherSeedOtherBatches()
    {
        var ds = Dataset(50);
        var a = new BatchSampler(ds, 8, seed: 42, randomFlip: true);
        var b = new BatchSampler(ds, 8, seed: 42, randomFlip: true);
        var c = new BatchSampler(ds, 8, seed: 43, randomFlip: true);
        bool anyDifferent = false;
        for (int k = 0; k < 20; k++)
        {
            var ba = a.Next();
            Check.BitIdentical(ba, b.Next(), $"batch {k}");
            anyDifferent |= !ba.AsSpan().SequenceEqual(c.Next());
        }
        Assert.That(anyDifferent, Is.True, "another seed gives other batches");
    }

    [Test]
    public void EachEpochVisitsEveryImageOnceInANewOrder()
    {
        var ds = Dataset(12);
        var indices = new int[4];
        var t = new BatchSampler(ds, 4, seed: 7);
        var seen = new List<int[]>();
        for (int e = 0; e < 3; e++)
        {
            var order = new List<int>();
            for (int k = 0; k < 3; k++)
            {
                var batch = new float[t.BatchLength];
                t.Next(batch, indices);
                order.AddRange(indices);
                for (int b = 0; b < 4; b++)
                    Assert.That(IdOf(batch.AsSpan(b * 6, 6)), Is.EqualTo(indices[b]), "batch holds the images it reports");
            }
            Assert.That(order.OrderBy(i => i), Is.EqualTo(Enumerable.Range(0, 12)), $"epoch {e} is a permutation");
            Assert.That(order, Is.EqualTo(t.PermutationOf(e).ToArray()));
            seen.Add(order.ToArray());
            Assert.That(t.State, Is.EqualTo(new SamplerState(e + 1, 0)));
        }
        Assert.That(seen[0], Is.Not.EqualTo(seen[1]));
        Assert.That(seen[0], Is.Not.EqualTo(Enumerable.Range(0, 12).ToArray()), "shuffled");
    }

    [Test]
    public void ABatchRunsOnIntoTheNextEpoch()
    {
        var ds = Dataset(7);
        var s = new BatchSampler(ds, 3, seed: 1);
        var idx = new int[3];
        var all = new List<int>();
        for (int k = 0; k < 3; k++) { s.Next(new float[s.BatchLength], idx); all.AddRange(idx); }
        Assert.That(all.Take(7), Is.EqualTo(s.PermutationOf(0).ToArray()));
        Assert.That(all.Skip(7), Is.EqualTo(s.PermutationOf(1)[..2].ToArray()));
        Assert.That(s.State, Is.EqualTo(new SamplerState(1, 2)));
    }

    [Test]
    public void ShuffleIsAPureFunctionOfSeedAndEpoch()
    {
        var p1 = new int[100];
        var p2 = new int[100];
        BatchSampler.Shuffle(p1, 5, 3);
        BatchSampler.Shuffle(p2, 5, 3);
        Assert.That(p1, Is.EqualTo(p2));
        BatchSampler.Shuffle(p2, 5, 4);
        Assert.That(p1, Is.Not.EqualTo(p2));
        Assert.That(p2.OrderBy(i => i), Is.EqualTo(Enumerable.Range(0, 100)));
    }

    [Test]
    public void FlipsSomeImagesAndOnlyMirrorsThem()
    {
        var ds = Dataset(40);
        var s = new BatchSampler(ds, 40, seed: 9, randomFlip: true);
        var idx = new int[40];
        var batch = new float[s.BatchLength];
        s.Next(batch, idx);
        int flipped = 0;
        var plain = new float[6];
        var mirrored = new float[6];
        for (int b = 0; b < 40; b++)
        {
            var got = batch.AsSpan(b * 6, 6);
            ds.CopyImage(idx[b], plain);
            ds.CopyImage(idx[b], mirrored, flipHorizontal: true);
            bool isPlain = got.SequenceEqual(plain), isMirror = got.SequenceEqual(mirrored);
            Assert.That(isPlain || isMirror, Is.True, $"image {b} is its source or its mirror");
            Assert.That(isMirror, Is.EqualTo(s.FlipAt(0, b)), $"flip of position {b} follows FlipAt");
            if (isMirror) flipped++;
        }
        Assert.That(flipped, Is.InRange(8, 32), "about half are flipped");

        var noFlip = new BatchSampler(ds, 40, seed: 9);
        noFlip.Next(batch, idx);
        for (int b = 0; b < 40; b++)
        {
            ds.CopyImage(idx[b], plain);
            Assert.That(batch.AsSpan(b * 6, 6).SequenceEqual(plain), Is.True);
        }
    }

    [Test]
    public void AResumedSamplerContinuesWithExactlyTheSameBatches()
    {
        var ds = Dataset(23);
        var uninterrupted = new BatchSampler(ds, 5, seed: 1234, randomFlip: true);
        var expected = Enumerable.Range(0, 15).Select(_ => uninterrupted.Next()).ToList();

        var first = new BatchSampler(ds, 5, seed: 1234, randomFlip: true);
        for (int k = 0; k < 6; k++) Check.BitIdentical(first.Next(), expected[k], $"batch {k} before the save");
        string saved = JsonSerializer.Serialize(first.State);
        Assert.That(first.State, Is.EqualTo(new SamplerState(1, 7)), "6·5 = 30 = 23 + 7");

        var state = JsonSerializer.Deserialize<SamplerState>(saved);
        var resumed = new BatchSampler(ds, 5, seed: 1234, randomFlip: true, state);
        for (int k = 6; k < 15; k++) Check.BitIdentical(resumed.Next(), expected[k], $"batch {k} after the resume");

        var restored = new BatchSampler(ds, 5, seed: 1234, randomFlip: true);
        restored.Restore(state);
        Check.BitIdentical(restored.Next(), expected[6], "Restore() on an existing sampler");
    }

    [Test]
    public void RefusesAStateOutOfRangeAndBadArguments()
    {
        var ds = Dataset(4);
        var s = new BatchSampler(ds, 2, seed: 0);
        Assert.Throws<ArgumentException>(() => s.Restore(new SamplerState(0, 5)));
        Assert.Throws<ArgumentException>(() => s.Restore(new SamplerState(-1, 0)));
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = new BatchSampler(ds, 0, 0));
        Assert.Throws<ArgumentException>(() => s.Next(new float[3]));
    }
}
