using IlgpuDdpm.Diffusion.Data;
using NUnit.Framework;

namespace IlgpuDdpm.Tests.Data;

[TestFixture]
public sealed class IdxReaderTests
{
    private TempFolder tmp = null!;

    [SetUp] public void SetUp() => tmp = new TempFolder();
    [TearDown] public void TearDown() => tmp.Dispose();

    private static void AssertOneLine(DataException e, string path, string fragment)
    {
        Assert.That(e.Message, Does.Contain(path), "the message names the file");
        Assert.That(e.Message, Does.Contain(fragment).IgnoreCase);
        Assert.That(e.Message, Does.Not.Contain('\n'), "one line");
    }

    [Test]
    public void ReadsARawImageFile()
    {
        string path = tmp.File("train-images-idx3-ubyte");
        var pixels = IdxFiles.WriteImages(path, count: 3, rows: 4, cols: 5);
        var images = IdxReader.ReadImages(path);
        Assert.That((images.Count, images.Channels, images.Height, images.Width), Is.EqualTo((3, 1, 4, 5)));
        Assert.That(images.Pixels, Is.EqualTo(pixels));
    }

    [Test]
    public void ReadsAGzipFileByItsMagicBytesNotItsName()
    {
        // Compressed but named without .gz, and raw but named .gz: both must read.
        string gz = tmp.File("images-no-suffix");
        var a = IdxFiles.WriteImages(gz, 2, 3, 3, gzip: true, seed: 5);
        string raw = tmp.File("raw.gz");
        var b = IdxFiles.WriteImages(raw, 2, 3, 3, gzip: false, seed: 9);
        Assert.That(IdxReader.IsGzip(gz), Is.True);
        Assert.That(IdxReader.IsGzip(raw), Is.False);
        Assert.That(IdxReader.ReadImages(gz).Pixels, Is.EqualTo(a));
        Assert.That(IdxReader.ReadImages(raw).Pixels, Is.EqualTo(b));
    }

    [Test]
    public void ReadsLabels()
    {
        string path = tmp.File("labels");
        File.WriteAllBytes(path, IdxFiles.Gzip(IdxFiles.Build(0x801, [4], [3, 1, 4, 1])));
        Assert.That(IdxReader.ReadLabels(path), Is.EqualTo(new byte[] { 3, 1, 4, 1 }));
    }

    [TestCase(false)]
    [TestCase(true)]
    public void RefusesATruncatedFile(bool gzip)
    {
        var full = IdxFiles.Build(0x803, [3, 4, 5], IdxFiles.Pixels(60));
        var cut = full.AsSpan(0, full.Length - 7).ToArray();
        string path = tmp.File("cut");
        File.WriteAllBytes(path, gzip ? IdxFiles.Gzip(cut) : cut);
        var e = Assert.Throws<DataException>(() => IdxReader.ReadImages(path))!;
        AssertOneLine(e, path, "truncated");
        Assert.That(e.Message, Does.Contain("76").And.Contain("69"), "promised and found byte counts");
    }

    [Test]
    public void RefusesATruncatedHeader()
    {
        string path = tmp.File("short");
        File.WriteAllBytes(path, IdxFiles.Build(0x803, [3, 4, 5], []).AsSpan(0, 9).ToArray());
        AssertOneLine(Assert.Throws<DataException>(() => IdxReader.ReadImages(path))!, path, "truncated");
        File.WriteAllBytes(path, [0, 0]);
        AssertOneLine(Assert.Throws<DataException>(() => IdxReader.ReadImages(path))!, path, "truncated");
    }

    [Test]
    public void RefusesTrailingBytes()
    {
        string path = tmp.File("long");
        var bytes = IdxFiles.Build(0x803, [2, 2, 2], IdxFiles.Pixels(9)); // one byte more than 2·2·2
        File.WriteAllBytes(path, bytes);
        AssertOneLine(Assert.Throws<DataException>(() => IdxReader.ReadImages(path))!, path, "trailing");
    }

    [Test]
    public void RefusesAWrongMagic()
    {
        string path = tmp.File("png-like");
        File.WriteAllBytes(path, IdxFiles.Build(unchecked((int)0x89504E47), [1, 1, 1], [0]));
        AssertOneLine(Assert.Throws<DataException>(() => IdxReader.ReadImages(path))!, path, "not an IDX file");

        File.WriteAllBytes(path, IdxFiles.Build(0x0D03, [1, 1, 1], new byte[4])); // float data
        AssertOneLine(Assert.Throws<DataException>(() => IdxReader.ReadImages(path))!, path, "not supported");
    }

    [Test]
    public void RefusesTheWrongNumberOfDimensions()
    {
        string labels = tmp.File("labels");
        File.WriteAllBytes(labels, IdxFiles.Build(0x801, [4], [1, 2, 3, 4]));
        var e = Assert.Throws<DataException>(() => IdxReader.ReadImages(labels))!;
        AssertOneLine(e, labels, "1 dimension");
        Assert.That(e.Message, Does.Contain("0x00000803"));

        string twoD = tmp.File("two-d");
        File.WriteAllBytes(twoD, IdxFiles.Build(0x802, [2, 2], [1, 2, 3, 4]));
        AssertOneLine(Assert.Throws<DataException>(() => IdxReader.ReadImages(twoD))!, twoD, "2 dimension");
    }

    [Test]
    public void RefusesZeroSizedOrHugeImages()
    {
        string path = tmp.File("zero");
        File.WriteAllBytes(path, IdxFiles.Build(0x803, [0, 0, 5], []));
        AssertOneLine(Assert.Throws<DataException>(() => IdxReader.ReadImages(path))!, path, "0x5");
        File.WriteAllBytes(path, IdxFiles.Build(0x803, [1, 65536, 65536], []));
        AssertOneLine(Assert.Throws<DataException>(() => IdxReader.ReadImages(path))!, path, "describe more than");
    }

    [Test]
    public void RefusesACorruptGzipStream()
    {
        string path = tmp.File("bad.gz");
        var gz = IdxFiles.Gzip(IdxFiles.Build(0x803, [2, 8, 8], IdxFiles.Pixels(128)));
        for (int i = 10; i < gz.Length - 8; i++) gz[i] ^= 0x5A; // scramble the deflate blocks
        File.WriteAllBytes(path, gz);
        var e = Assert.Throws<DataException>(() => IdxReader.ReadImages(path))!;
        Assert.That(e.Message, Does.Contain(path));
        Assert.That(e.Message, Does.Contain("gzip").Or.Contain("truncated").Or.Contain("IDX"));
    }

    [Test]
    public void MissingFileIsOneClearLine()
    {
        string path = tmp.File("nope");
        AssertOneLine(Assert.Throws<DataException>(() => IdxReader.ReadImages(path))!, path, "not found");
    }
}
