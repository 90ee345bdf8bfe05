using IlgpuDdpm.Diffusion.Data;
using NUnit.Framework;
using SixLabors.ImageSharp.PixelFormats;

namespace IlgpuDdpm.Tests.Data;

[TestFixture]
public sealed class ImageDatasetTests
{
    private TempFolder tmp = null!;

    [SetUp] public void SetUp() => tmp = new TempFolder();
    [TearDown] public void TearDown() => tmp.Dispose();

    [Test]
    public void ScalesBytesToMinusOneOne()
    {
        var bytes = new ByteImages([0, 51, 127, 128, 255, 255], 1, 1, 2, 3);
        var ds = ImageDataset.FromBytes(bytes, "test");
        Assert.That(ds.Data, Is.EqualTo(new[] { -1f, 51 / 127.5f - 1, 127 / 127.5f - 1, 128 / 127.5f - 1, 1f, 1f }));
        Assert.That(ds.Data[0], Is.EqualTo(-1f).Within(0), "0 → exactly −1");
        Assert.That(ds.Data[4], Is.EqualTo(1f).Within(0), "255 → exactly 1");
        Assert.That((ds.Count, ds.Channels, ds.Height, ds.Width, ds.ImageLength), Is.EqualTo((1, 1, 2, 3, 6)));
    }

    [Test]
    public void CopiesImagesAndFlipsThemLeftRight()
    {
        var bytes = new ByteImages([0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15], 2, 1, 2, 3);
        var ds = ImageDataset.FromBytes(bytes, "test");
        var dst = new float[6];
        ds.CopyImage(1, dst, flipHorizontal: true);
        var expected = new byte[] { 12, 11, 10, 15, 14, 13 }.Select(b => ImageDataset.ToUnit(b)).ToArray();
        Assert.That(dst, Is.EqualTo(expected));
        ds.CopyImage(0, dst);
        Assert.That(dst, Is.EqualTo(ds.GetImage(0).ToArray()));
        Assert.That(ds.Take(1).Count, Is.EqualTo(1));
        Assert.That(ds.Take(1).Data, Is.EqualTo(ds.GetImage(0).ToArray()));
    }

    [Test]
    public void NamedDatasetLoadsTrainAndTestSplits()
    {
        string dir = tmp.Folder("fashion-mnist");
        var train = IdxFiles.WriteImages(Path.Combine(dir, "train-images-idx3-ubyte.gz"), 5, 4, 4, gzip: true, seed: 1);
        var test = IdxFiles.WriteImages(Path.Combine(dir, "t10k-images-idx3-ubyte.gz"), 2, 4, 4, gzip: true, seed: 2);

        var ds = ImageDataset.Load("fashion-mnist", null, null, DatasetSplit.Train, tmp.Path);
        Assert.That((ds.Count, ds.Channels, ds.Height, ds.Width), Is.EqualTo((5, 1, 4, 4)));
        Assert.That(ds.Data, Is.EqualTo(train.Select(ImageDataset.ToUnit).ToArray()));
        Assert.That(ds.Source, Does.EndWith("train-images-idx3-ubyte.gz"));

        var ev = ImageDataset.Load("Fashion-MNIST", null, null, DatasetSplit.Test, tmp.Path);
        Assert.That(ev.Data, Is.EqualTo(test.Select(ImageDataset.ToUnit).ToArray()));
    }

    [Test]
    public void MissingNamedDatasetsSayHowToGetThem()
    {
        var e = Assert.Throws<DataException>(() => ImageDataset.Load("fashion-mnist", null, null, DatasetSplit.Train, tmp.Path))!;
        Assert.That(e.Message, Does.Contain("apt-get install -y dataset-fashion-mnist").And.Contain("train-images-idx3-ubyte"));
        e = Assert.Throws<DataException>(() => ImageDataset.Load("mnist", null, null, DatasetSplit.Test, tmp.Path))!;
        Assert.That(e.Message, Does.Contain("no dataset-mnist package").And.Contain("t10k-images-idx3-ubyte"));
        Assert.That(e.Message, Does.Not.Contain('\n'));
    }

    [Test]
    public void FolderOfIdxFilesFindsEachSplit()
    {
        string dir = tmp.Folder("kmnist");
        var train = IdxFiles.WriteImages(Path.Combine(dir, "k49-train-images-idx3-ubyte"), 3, 2, 2, seed: 3);
        var test = IdxFiles.WriteImages(Path.Combine(dir, "k49-test-images-idx3-ubyte.gz"), 1, 2, 2, gzip: true, seed: 4);
        Assert.That(ImageDataset.Load(dir).Data, Is.EqualTo(train.Select(ImageDataset.ToUnit).ToArray()));
        Assert.That(ImageDataset.Load(dir, split: DatasetSplit.Test).Data, Is.EqualTo(test.Select(ImageDataset.ToUnit).ToArray()));

        // The file itself is a spec too.
        Assert.That(ImageDataset.Load(Path.Combine(dir, "k49-test-images-idx3-ubyte.gz")).Count, Is.EqualTo(1));
    }

    [Test]
    public void FolderWithOneIdxFileTrainsOnItButNeedsARealTestSplit()
    {
        // The GPU recipe's --small-data copy carries only t10k-images: training reads that one file
        // (the CLI names it on its data line); evaluation still needs a file for the test split.
        string onlyTest = tmp.Folder("only-test");
        IdxFiles.WriteImages(Path.Combine(onlyTest, "t10k-images-idx3-ubyte"), 3, 2, 2);
        var data = ImageDataset.Load(onlyTest);
        Assert.That(data.Count, Is.EqualTo(3));
        Assert.That(data.Source, Does.Contain("t10k-images"));

        string onlyTrain = tmp.Folder("only-train");
        IdxFiles.WriteImages(Path.Combine(onlyTrain, "train-images-idx3-ubyte"), 1, 2, 2);
        var e = Assert.Throws<DataException>(() => ImageDataset.Load(onlyTrain, split: DatasetSplit.Test))!;
        Assert.That(e.Message, Does.Contain(onlyTrain).And.Contain("test split"));
    }

    [Test]
    public void IdxImagesCanBeResizedAndMadeRgb()
    {
        string file = tmp.File("train-images-idx3-ubyte");
        IdxFiles.WriteImages(file, 2, 4, 4);
        var ds = ImageDataset.Load(tmp.Path, size: 8, channels: 3);
        Assert.That((ds.Count, ds.Channels, ds.Height, ds.Width), Is.EqualTo((2, 3, 8, 8)));
        Assert.That(ds.Data.Min(), Is.GreaterThanOrEqualTo(-1f));
        Assert.That(ds.Data.Max(), Is.LessThanOrEqualTo(1f));
    }

    [Test]
    public void ImageFolderLoadsAndUsesTrainTestSubfolders()
    {
        ImageFolderReaderTests.WriteImage(tmp.File("a.png"), 4, 4, (_, _) => new Rgb24(255, 0, 0));
        var ds = ImageDataset.Load(tmp.Path);
        Assert.That((ds.Count, ds.Channels), Is.EqualTo((1, 3)));
        Assert.That(ds.Data.AsSpan(0, 16).ToArray(), Is.All.EqualTo(1f));
        Assert.That(ds.Data.AsSpan(16, 32).ToArray(), Is.All.EqualTo(-1f));
        var e = Assert.Throws<DataException>(() => ImageDataset.Load(tmp.Path, split: DatasetSplit.Test))!;
        Assert.That(e.Message, Does.Contain("no test split"));

        string root = tmp.Folder("split");
        ImageFolderReaderTests.WriteImage(tmp.File("split/train/x.png"), 4, 4, (_, _) => new Rgb24(0, 0, 0));
        ImageFolderReaderTests.WriteImage(tmp.File("split/train/y.png"), 4, 4, (_, _) => new Rgb24(0, 0, 0));
        ImageFolderReaderTests.WriteImage(tmp.File("split/test/z.png"), 4, 4, (_, _) => new Rgb24(255, 255, 255));
        Assert.That(ImageDataset.Load(root).Count, Is.EqualTo(2));
        var test = ImageDataset.Load(root, split: DatasetSplit.Test);
        Assert.That((test.Count, test.Channels), Is.EqualTo((1, 1)));
        Assert.That(test.Data, Is.All.EqualTo(1f));
    }

    [Test]
    public void UnknownSpecIsOneClearLine()
    {
        string spec = Path.Combine(tmp.Path, "no-such-thing");
        var e = Assert.Throws<DataException>(() => ImageDataset.Load(spec))!;
        Assert.That(e.Message, Does.Contain(spec).And.Contain("not found"));
        string notIdx = tmp.File("x.bin");
        File.WriteAllBytes(notIdx, [1, 2, 3, 4, 5]);
        Assert.That(Assert.Throws<DataException>(() => ImageDataset.Load(notIdx))!.Message, Does.Contain("not an IDX image file"));
    }

    [Test]
    public void RealFashionMnistTestSplitWhenInstalled()
    {
        if (!File.Exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"))
            Assert.Ignore("dataset-fashion-mnist is not installed (apt-get install -y dataset-fashion-mnist)");
        var ds = ImageDataset.Load("fashion-mnist", split: DatasetSplit.Test);
        Assert.That((ds.Count, ds.Channels, ds.Height, ds.Width), Is.EqualTo((10000, 1, 28, 28)));
        Assert.That(ds.Data.Min(), Is.EqualTo(-1f));
        Assert.That(ds.Data.Max(), Is.EqualTo(1f));
        double mean = ds.Data.Average();
        Assert.That(mean, Is.InRange(-0.6, -0.2), "Fashion-MNIST is mostly dark background (pixel mean ≈ 73/255)");
    }
}
