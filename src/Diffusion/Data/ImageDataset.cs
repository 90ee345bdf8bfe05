using System.Text.RegularExpressions;

namespace IlgpuDdpm.Diffusion.Data;

/// <summary>Which part of a data set: the training images or the held-out test images (for evaluation).</summary>
public enum DatasetSplit
{
    /// <summary>The training images (<c>train-images-idx3-ubyte</c>, or the folder / its <c>train/</c>).</summary>
    Train,

    /// <summary>The test images (<c>t10k-images-idx3-ubyte</c>, or the folder's <c>test/</c>).</summary>
    Test,
}

/// <summary>
/// Images held in host memory as float32 <c>[Count, Channels, Height, Width]</c> (NCHW), scaled from bytes
/// to [−1, 1] by <c>x / 127.5 − 1</c> (the DDPM paper's data scaling). <see cref="Load"/> resolves a data-set
/// spec: <c>fashion-mnist</c>, <c>mnist</c>, a folder of IDX files, one IDX file, or a folder of images.
/// </summary>
public sealed partial class ImageDataset
{
    /// <summary>Where Debian's <c>dataset-*</c> packages install their files.</summary>
    public const string SystemDatasetRoot = "/usr/share/datasets";

    /// <summary>Wraps <paramref name="data"/> (length count·channels·height·width, values in [−1, 1]).</summary>
    public ImageDataset(float[] data, int count, int channels, int height, int width, string source)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (count < 0 || channels <= 0 || height <= 0 || width <= 0)
            throw new ArgumentException($"image dimensions must be positive, got count {count}, {channels}x{height}x{width}");
        if ((long)count * channels * height * width != data.LongLength)
            throw new ArgumentException($"data holds {data.LongLength} floats, expected {count}·{channels}·{height}·{width}");
        Data = data;
        Count = count;
        Channels = channels;
        Height = height;
        Width = width;
        Source = source;
    }

    /// <summary>The pixels, <c>[Count, Channels, Height, Width]</c>, in [−1, 1].</summary>
    public float[] Data { get; }

    /// <summary>Number of images.</summary>
    public int Count { get; }

    /// <summary>1 (grayscale) or 3 (RGB).</summary>
    public int Channels { get; }

    /// <summary>Rows per image.</summary>
    public int Height { get; }

    /// <summary>Columns per image.</summary>
    public int Width { get; }

    /// <summary>What was read: the file or folder path.</summary>
    public string Source { get; }

    /// <summary>Floats per image: Channels·Height·Width.</summary>
    public int ImageLength => Channels * Height * Width;

    /// <summary>Image <paramref name="index"/>, <c>[Channels, Height, Width]</c>.</summary>
    public ReadOnlySpan<float> GetImage(int index)
    {
        if ((uint)index >= (uint)Count) throw new ArgumentOutOfRangeException(nameof(index), $"image {index} of {Count}");
        return Data.AsSpan(index * ImageLength, ImageLength);
    }

    /// <summary>Copies image <paramref name="index"/> into <paramref name="destination"/>, mirrored left–right when <paramref name="flipHorizontal"/>.</summary>
    public void CopyImage(int index, Span<float> destination, bool flipHorizontal = false)
    {
        var src = GetImage(index);
        if (destination.Length < src.Length)
            throw new ArgumentException($"destination holds {destination.Length} floats, an image needs {src.Length}");
        if (!flipHorizontal) { src.CopyTo(destination); return; }
        int rows = Channels * Height, w = Width;
        for (int r = 0; r < rows; r++)
        {
            var s = src.Slice(r * w, w);
            var d = destination.Slice(r * w, w);
            for (int x = 0; x < w; x++) d[x] = s[w - 1 - x];
        }
    }

    /// <summary>The first <paramref name="count"/> images (all when there are fewer), as a new data set.</summary>
    public ImageDataset Take(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (count >= Count) return this;
        return new ImageDataset(Data.AsSpan(0, count * ImageLength).ToArray(), count, Channels, Height, Width, Source);
    }

    /// <summary>Scales bytes to [−1, 1]: <c>x / 127.5 − 1</c> (0 → −1, 255 → 1).</summary>
    public static ImageDataset FromBytes(ByteImages images, string source)
    {
        ArgumentNullException.ThrowIfNull(images);
        var table = new float[256];
        for (int i = 0; i < 256; i++) table[i] = ToUnit((byte)i);
        var data = new float[images.Pixels.LongLength];
        var px = images.Pixels;
        for (long i = 0; i < data.LongLength; i++) data[i] = table[px[i]];
        return new ImageDataset(data, images.Count, images.Channels, images.Height, images.Width, source);
    }

    /// <summary>One byte scaled to [−1, 1]: <c>x / 127.5 − 1</c>.</summary>
    public static float ToUnit(byte x) => x / 127.5f - 1f;

    /// <summary>
    /// Loads a data set. <paramref name="spec"/> is one of:
    /// <list type="bullet">
    /// <item><c>fashion-mnist</c> — <c>/usr/share/datasets/fashion-mnist/</c> (Debian package <c>dataset-fashion-mnist</c>);</item>
    /// <item><c>mnist</c> — <c>/usr/share/datasets/mnist/</c> (no Debian package exists; put the IDX files there or pass their folder);</item>
    /// <item>a folder holding IDX files: <c>train-images-idx3-ubyte[.gz]</c> / <c>t10k-images-idx3-ubyte[.gz]</c>, or one
    /// <c>*-images-idx3-ubyte*</c> file per split (names with <c>t10k</c> or <c>test</c> are the test split);</item>
    /// <item>one IDX image file (raw or gzip);</item>
    /// <item>a folder of PNG/JPEG/BMP images (see <see cref="ImageFolderReader"/>); for the test split, or when the
    /// folder itself has no images, its <c>train/</c> or <c>test/</c> subfolder.</item>
    /// </list>
    /// The names <c>fashion-mnist</c> and <c>mnist</c> win over a folder of that name in the current directory
    /// (pass <c>./mnist</c> for that). <paramref name="size"/> (default: the data's own) centre-crops and resizes
    /// to a square; <paramref name="channels"/> (default: the data's own; 1 for IDX) converts to grayscale or RGB.
    /// </summary>
    public static ImageDataset Load(string spec, int? size = null, int? channels = null, DatasetSplit split = DatasetSplit.Train) =>
        Load(spec, size, channels, split, SystemDatasetRoot);

    /// <summary><see cref="Load(string, int?, int?, DatasetSplit)"/> with the root of the named data sets given (for tests).</summary>
    internal static ImageDataset Load(string spec, int? size, int? channels, DatasetSplit split, string datasetRoot)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (spec.Length == 0) throw new DataException("dataset: empty name; expected fashion-mnist, mnist, a folder or an IDX file");
        string source = ResolveSource(spec, split, datasetRoot, out bool isIdx);
        ByteImages bytes;
        if (isIdx)
        {
            bytes = IdxReader.ReadImages(source);
            bytes = ImageFolderReader.Transform(bytes, size, channels, source);
        }
        else
        {
            bytes = ImageFolderReader.Read(source, size, channels);
        }
        if (bytes.Count == 0) throw new DataException($"{source}: holds no images");
        return FromBytes(bytes, source);
    }

    /// <summary>
    /// The file (IDX, <paramref name="isIdx"/> true) or image folder that <paramref name="spec"/> names
    /// for <paramref name="split"/>; a <see cref="DataException"/> saying what is missing otherwise.
    /// </summary>
    public static string ResolveSource(string spec, DatasetSplit split, out bool isIdx) =>
        ResolveSource(spec, split, SystemDatasetRoot, out isIdx);

    internal static string ResolveSource(string spec, DatasetSplit split, string datasetRoot, out bool isIdx)
    {
        string lower = spec.ToLowerInvariant();
        if (lower is "fashion-mnist" or "mnist")
        {
            string dir = Path.Combine(datasetRoot, lower);
            string? file = Directory.Exists(dir) ? FindIdxImages(dir, split) : null;
            if (file is null)
            {
                string expected = split == DatasetSplit.Train ? "train-images-idx3-ubyte[.gz]" : "t10k-images-idx3-ubyte[.gz]";
                string fix = lower == "fashion-mnist"
                    ? "install it with `apt-get update && apt-get install -y dataset-fashion-mnist`"
                    : "Debian has no dataset-mnist package: copy the MNIST IDX files (train-images-idx3-ubyte.gz, t10k-images-idx3-ubyte.gz) there or pass their folder, or use fashion-mnist (`apt-get install -y dataset-fashion-mnist`)";
                throw new DataException($"dataset '{lower}' not found: no {expected} in {dir}/; {fix}");
            }
            isIdx = true;
            return file;
        }

        if (File.Exists(spec))
        {
            if (!IdxReader.LooksLikeImages(spec))
                throw new DataException($"{spec}: not an IDX image file (magic 0x{IdxReader.ImagesMagic:X8}, raw or gzip); pass a folder for PNG/JPEG/BMP images");
            isIdx = true;
            return spec;
        }

        if (!Directory.Exists(spec))
            throw new DataException($"dataset '{spec}' not found: expected fashion-mnist, mnist, an existing folder or an IDX image file");

        var idx = FindIdxImages(spec, split);
        if (idx is not null) { isIdx = true; return idx; }
        // A folder with one IDX image file and no train-images file (e.g. the GPU recipe's --small-data copy,
        // which carries only t10k-images) trains on that file; the caller reports which file it read.
        if (split == DatasetSplit.Train && ListIdxCandidates(spec) is [var only]) { isIdx = true; return only; }
        if (ListIdxCandidates(spec).Count > 0)
            throw new DataException($"{spec}: has IDX image files ({string.Join(", ", ListIdxCandidates(spec).Select(Path.GetFileName))}) but none for the {SplitName(split)} split (expected {(split == DatasetSplit.Train ? "train-images-idx3-ubyte[.gz]" : "t10k-images-idx3-ubyte[.gz]")})");

        isIdx = false;
        string sub = Path.Combine(spec, split == DatasetSplit.Train ? "train" : "test");
        bool hasOwnImages = ImageFolderReader.ListImages(spec).Count > 0;
        if (split == DatasetSplit.Train)
        {
            if (hasOwnImages) return spec;
            if (Directory.Exists(sub)) return sub;
            throw new DataException($"{spec}: no image files (expected {string.Join(", ", ImageFolderReader.Extensions)}) and no IDX files");
        }
        if (Directory.Exists(sub)) return sub;
        throw new DataException($"{spec}: has no test split (no t10k-images-idx3-ubyte[.gz] and no test/ subfolder); pass the evaluation images as their own folder");
    }

    private static string SplitName(DatasetSplit split) => split == DatasetSplit.Train ? "train" : "test";

    [GeneratedRegex(@"images[-.]idx3-ubyte", RegexOptions.IgnoreCase)]
    private static partial Regex IdxImagesName();

    private static bool IsTestName(string name)
    {
        string n = name.ToLowerInvariant();
        return n.StartsWith("t10k", StringComparison.Ordinal) || n.Contains("test", StringComparison.Ordinal);
    }

    private static List<string> ListIdxCandidates(string dir) =>
        Directory.EnumerateFiles(dir)
            .Where(f => IdxImagesName().IsMatch(Path.GetFileName(f)))
            .OrderBy(f => Path.GetFileName(f), StringComparer.Ordinal)
            .ToList();

    // The IDX image file of a split in dir: the standard name (raw before .gz), else the one file whose name
    // fits the split; null when there is none; an error when several fit.
    private static string? FindIdxImages(string dir, DatasetSplit split)
    {
        string stem = split == DatasetSplit.Train ? "train-images-idx3-ubyte" : "t10k-images-idx3-ubyte";
        foreach (var name in new[] { stem, stem + ".gz" })
        {
            string p = Path.Combine(dir, name);
            if (File.Exists(p)) return p;
        }
        var fits = ListIdxCandidates(dir).Where(f => IsTestName(Path.GetFileName(f)) == (split == DatasetSplit.Test)).ToList();
        if (fits.Count == 2 && fits[1] == fits[0] + ".gz") return fits[0];
        if (fits.Count == 1) return fits[0];
        if (fits.Count > 1)
            throw new DataException($"{dir}: several IDX image files for the {SplitName(split)} split ({string.Join(", ", fits.Select(Path.GetFileName))}); pass the file itself");
        return null;
    }
}
