using IlgpuDdpm.Kernels.Random;

namespace IlgpuDdpm.Diffusion.Data;

/// <summary>
/// Where a <see cref="BatchSampler"/> stands: the epoch and the number of images of that epoch's
/// permutation already used. Save it with the training state; restoring it makes a resumed run draw
/// exactly the batches an uninterrupted run would have drawn (System.Text.Json round-trips it).
/// </summary>
public readonly record struct SamplerState(long Epoch, int Index);

/// <summary>
/// Draws training batches from an <see cref="ImageDataset"/> in shuffled epochs. Epoch <c>e</c> visits
/// every image once, in a Fisher–Yates permutation whose draws are Philox numbers of stream
/// <see cref="ShuffleStream"/> under the run's seed, counter <c>(e &lt;&lt; 32) + k</c> — a pure function of
/// (seed, epoch). A batch that runs past the end of an epoch continues with the next epoch's
/// permutation, so every batch is full. The optional horizontal flip of the image at position <c>p</c> of
/// epoch <c>e</c> is bit 0 of Philox number <c>(e &lt;&lt; 32) + p</c> of stream <see cref="FlipStream"/>. Nothing
/// else is kept, so <see cref="State"/> (epoch, index) is all a resumed run needs.
/// </summary>
public sealed class BatchSampler
{
    /// <summary>Philox stream id of the epoch permutations ("SHUF").</summary>
    public const uint ShuffleStream = 0x53485546;

    /// <summary>Philox stream id of the horizontal flips ("FLIP").</summary>
    public const uint FlipStream = 0x464C4950;

    private readonly ImageDataset data;
    private readonly int[] permutation;
    private long permutationEpoch = -1;

    /// <summary>
    /// A sampler over <paramref name="data"/> giving batches of <paramref name="batchSize"/> images, shuffled
    /// from <paramref name="seed"/>, mirrored at random when <paramref name="randomFlip"/>, starting at
    /// <paramref name="state"/> (default: epoch 0, index 0).
    /// </summary>
    public BatchSampler(ImageDataset data, int batchSize, ulong seed, bool randomFlip = false, SamplerState? state = null)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (data.Count == 0) throw new ArgumentException("the data set holds no images");
        if (batchSize <= 0) throw new ArgumentOutOfRangeException(nameof(batchSize), $"batch size {batchSize}; expected a positive number");
        this.data = data;
        BatchSize = batchSize;
        Seed = seed;
        RandomFlip = randomFlip;
        permutation = new int[data.Count];
        Restore(state ?? default);
    }

    /// <summary>Images per batch.</summary>
    public int BatchSize { get; }

    /// <summary>The run's seed.</summary>
    public ulong Seed { get; }

    /// <summary>Whether images are mirrored left–right at random.</summary>
    public bool RandomFlip { get; }

    /// <summary>The data set drawn from.</summary>
    public ImageDataset Dataset => data;

    /// <summary>Floats in one batch: BatchSize·Channels·Height·Width.</summary>
    public int BatchLength => BatchSize * data.ImageLength;

    /// <summary>The current position: the next batch starts at image <c>Index</c> of epoch <c>Epoch</c>'s permutation.</summary>
    public SamplerState State { get; private set; }

    /// <summary>Moves to <paramref name="state"/>, e.g. one saved with a checkpoint.</summary>
    public void Restore(SamplerState state)
    {
        if (state.Epoch < 0 || state.Epoch > uint.MaxValue || state.Index < 0 || state.Index > data.Count)
            throw new ArgumentException($"sampler state (epoch {state.Epoch}, index {state.Index}) is out of range for a data set of {data.Count} images");
        State = state.Index == data.Count ? new SamplerState(state.Epoch + 1, 0) : state;
    }

    /// <summary>
    /// Fills <paramref name="batch"/> (at least <see cref="BatchLength"/> floats, <c>[BatchSize, C, H, W]</c>)
    /// with the next batch and advances; <paramref name="indices"/>, when given, receives the data-set
    /// index of each image.
    /// </summary>
    public void Next(Span<float> batch, Span<int> indices = default)
    {
        if (batch.Length < BatchLength)
            throw new ArgumentException($"batch buffer holds {batch.Length} floats; a batch of {BatchSize}x{data.Channels}x{data.Height}x{data.Width} needs {BatchLength}");
        if (indices.Length != 0 && indices.Length < BatchSize)
            throw new ArgumentException($"indices buffer holds {indices.Length} entries; expected {BatchSize}");
        int len = data.ImageLength;
        var (epoch, index) = State;
        for (int b = 0; b < BatchSize; b++)
        {
            if (index == data.Count) { epoch++; index = 0; }
            int image = PermutationOf(epoch)[index];
            bool flip = RandomFlip && FlipAt(epoch, index);
            data.CopyImage(image, batch.Slice(b * len, len), flip);
            if (indices.Length != 0) indices[b] = image;
            index++;
        }
        if (index == data.Count) { epoch++; index = 0; }
        State = new SamplerState(epoch, index);
    }

    /// <summary>Fills a new array with the next batch.</summary>
    public float[] Next()
    {
        var batch = new float[BatchLength];
        Next(batch);
        return batch;
    }

    /// <summary>The permutation of epoch <paramref name="epoch"/> (a view of a buffer reused for the next epoch).</summary>
    public ReadOnlySpan<int> PermutationOf(long epoch)
    {
        if (epoch != permutationEpoch)
        {
            Shuffle(permutation, Seed, epoch);
            permutationEpoch = epoch;
        }
        return permutation;
    }

    /// <summary>Whether the image at <paramref name="position"/> of epoch <paramref name="epoch"/> is mirrored (when flipping is on).</summary>
    public bool FlipAt(long epoch, int position) =>
        (Philox.Bits(Seed, FlipStream, ((ulong)epoch << 32) + (uint)position) & 1u) != 0;

    /// <summary>
    /// Fills <paramref name="permutation"/> with 0..n−1 in the order of epoch <paramref name="epoch"/>:
    /// Fisher–Yates from the back, swap position i with <c>j = Below(i + 1)</c>, the k-th draw being Philox
    /// number <c>(epoch &lt;&lt; 32) + k</c> of <see cref="ShuffleStream"/>.
    /// </summary>
    public static void Shuffle(Span<int> permutation, ulong seed, long epoch)
    {
        for (int i = 0; i < permutation.Length; i++) permutation[i] = i;
        ulong counter = (ulong)epoch << 32;
        for (int i = permutation.Length - 1; i > 0; i--, counter++)
        {
            int j = Philox.Below(seed, ShuffleStream, counter, i + 1);
            (permutation[i], permutation[j]) = (permutation[j], permutation[i]);
        }
    }
}
