using IlgpuDdpm.Diffusion.Data;

namespace IlgpuDdpm.Diffusion.Evaluation;

/// <summary>
/// Images with their class labels, for training and testing the evaluation classifier. The labels come from
/// the IDX label file next to the IDX image file (<c>train-images-idx3-ubyte[.gz]</c> →
/// <c>train-labels-idx1-ubyte[.gz]</c>, the MNIST naming); data without one is refused in one line.
/// </summary>
public sealed class LabelledImages
{
    /// <summary>Images and labels of equal count; labels in 0..<paramref name="classes"/>−1.</summary>
    public LabelledImages(ImageDataset images, byte[] labels, int classes)
    {
        if (labels.Length != images.Count)
            throw new DataException($"{images.Source}: {images.Count} images but {labels.Length} labels");
        foreach (var y in labels)
            if (y >= classes) throw new DataException($"{images.Source}: label {y} is out of range for {classes} classes");
        Images = images;
        Labels = labels;
        Classes = classes;
    }

    /// <summary>The images, in [−1, 1].</summary>
    public ImageDataset Images { get; }

    /// <summary>One class index per image.</summary>
    public byte[] Labels { get; }

    /// <summary>Number of classes (the largest label + 1 of the training split).</summary>
    public int Classes { get; }

    /// <summary>Number of images.</summary>
    public int Count => Images.Count;

    /// <summary>
    /// Loads the <paramref name="split"/> of <paramref name="spec"/> (as <see cref="ImageDataset.Load(string, int?, int?, DatasetSplit)"/>)
    /// with its labels; <paramref name="classes"/> defaults to the largest label + 1 (at least 2).
    /// </summary>
    public static LabelledImages Load(string spec, DatasetSplit split, int? classes = null)
    {
        string source = ImageDataset.ResolveSource(spec, split, out bool isIdx);
        if (!isIdx)
            throw new DataException($"{source}: a folder of image files has no labels; the classifier needs IDX data with a *-labels-idx1-ubyte[.gz] file next to the images");
        string labelsPath = LabelFileFor(source);
        var images = ImageDataset.Load(source);
        var labels = IdxReader.ReadLabels(labelsPath);
        int count = classes ?? Math.Max(2, labels.Length == 0 ? 0 : labels.Max() + 1);
        if (labels.Length != images.Count)
            throw new DataException($"{labelsPath}: holds {labels.Length} labels but {source} holds {images.Count} images");
        return new LabelledImages(images, labels, count);
    }

    /// <summary>
    /// The label file beside IDX image file <paramref name="imagePath"/>: its name with <c>images-idx3</c> replaced
    /// by <c>labels-idx1</c>, with or without <c>.gz</c>. A <see cref="DataException"/> naming it when absent.
    /// </summary>
    public static string LabelFileFor(string imagePath)
    {
        string dir = Path.GetDirectoryName(Path.GetFullPath(imagePath))!;
        string name = Path.GetFileName(imagePath);
        int at = name.IndexOf("images", StringComparison.OrdinalIgnoreCase);
        if (at < 0)
            throw new DataException($"{imagePath}: cannot tell its label file (the name has no 'images' to replace with 'labels'); the classifier needs labelled IDX data");
        string stem = name[..at] + "labels" + name[(at + "images".Length)..].Replace("idx3", "idx1", StringComparison.OrdinalIgnoreCase);
        if (stem.EndsWith(".gz", StringComparison.OrdinalIgnoreCase)) stem = stem[..^3];
        foreach (var candidate in new[] { stem, stem + ".gz" })
        {
            string p = Path.Combine(dir, candidate);
            if (File.Exists(p)) return p;
        }
        throw new DataException($"{imagePath}: no label file next to it (expected {Path.Combine(dir, stem)}[.gz]); the classifier needs labelled data");
    }
}
