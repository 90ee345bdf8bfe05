using System.Buffers.Binary;
using System.Text;
using IlgpuDdpm.Diffusion.Data;
using NUnit.Framework;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace IlgpuDdpm.Tests.Data;

[TestFixture]
public sealed class ImageFolderReaderTests
{
    private TempFolder tmp = null!;

    [SetUp] public void SetUp() => tmp = new TempFolder();
    [TearDown] public void TearDown() => tmp.Dispose();

    /// <summary>Writes a w×h image whose pixel (x, y) is <paramref name="color"/>(x, y).</summary>
    internal static void WriteImage(string path, int w, int h, Func<int, int, Rgb24> color)
    {
        using var img = new Image<Rgb24>(w, h);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                img[x, y] = color(x, y);
        img.Save(path); // format from the extension
    }

    [Test]
    public void ReadsFilesSortedByNameAndSkipsOtherFiles()
    {
        WriteImage(tmp.File("b.png"), 4, 4, (_, _) => new Rgb24(20, 20, 20));
        WriteImage(tmp.File("a.bmp"), 4, 4, (_, _) => new Rgb24(10, 10, 10));
        WriteImage(tmp.File("c.PNG"), 4, 4, (_, _) => new Rgb24(30, 30, 30));
        File.WriteAllText(tmp.File("notes.txt"), "not an image");
        WriteImage(tmp.File(".hidden.png"), 4, 4, (_, _) => new Rgb24(99, 99, 99));

        var images = ImageFolderReader.Read(tmp.Path);
        Assert.That((images.Count, images.Channels, images.Height, images.Width), Is.EqualTo((3, 1, 4, 4)), "gray images default to one channel");
        Assert.That(images.Pixels[0], Is.EqualTo(10));
        Assert.That(images.Pixels[16], Is.EqualTo(20));
        Assert.That(images.Pixels[32], Is.EqualTo(30));
    }

    [Test]
    public void CentreCropsANonSquareImage()
    {
        // 8 wide, 4 high: columns 2..5 are the centre square (value 200); the rest 0.
        WriteImage(tmp.File("wide.png"), 8, 4, (x, _) => x is >= 2 and <= 5 ? new Rgb24(200, 200, 200) : new Rgb24(0, 0, 0));
        // 3 wide, 7 high: rows 2..4 are the centre (a vertical ramp), with distinct rows.
        WriteImage(tmp.File("tall.png"), 3, 7, (x, y) => new Rgb24((byte)(10 * y + x), (byte)(10 * y + x), (byte)(10 * y + x)));

        var wide = ImageFolderReader.Read(tmp.Path, size: 4, channels: 1);
        var first = wide.Pixels.AsSpan(16, 16).ToArray(); // "wide.png" sorts after "tall.png"
        Assert.That(first, Is.All.EqualTo(200), "only the centre square survives the crop");

        File.Delete(tmp.File("wide.png"));
        var tall = ImageFolderReader.Read(tmp.Path, size: 3, channels: 1);
        Assert.That(tall.Pixels, Is.EqualTo(new byte[] { 20, 21, 22, 30, 31, 32, 40, 41, 42 }), "rows 2..4 of the tall image");
    }

    [Test]
    public void DefaultSizeIsTheFirstImagesShorterSide()
    {
        WriteImage(tmp.File("a.png"), 10, 6, (_, _) => new Rgb24(1, 2, 3));
        var images = ImageFolderReader.Read(tmp.Path);
        Assert.That((images.Height, images.Width), Is.EqualTo((6, 6)));
    }

    [Test]
    public void ResizesToTheModelSize()
    {
        // Left half black, right half white, 16×16 → 4×4: left columns stay dark, right ones bright,
        // a uniform image stays exactly uniform.
        WriteImage(tmp.File("a.png"), 16, 16, (x, _) => x < 8 ? new Rgb24(0, 0, 0) : new Rgb24(255, 255, 255));
        WriteImage(tmp.File("b.png"), 16, 16, (_, _) => new Rgb24(77, 77, 77));
        var images = ImageFolderReader.Read(tmp.Path, size: 4, channels: 1);
        Assert.That((images.Count, images.Height, images.Width), Is.EqualTo((2, 4, 4)));
        for (int y = 0; y < 4; y++)
        {
            Assert.That(images.Pixels[y * 4 + 0], Is.LessThan(10));
            Assert.That(images.Pixels[y * 4 + 1], Is.LessThan(60));
            Assert.That(images.Pixels[y * 4 + 2], Is.GreaterThan(195));
            Assert.That(images.Pixels[y * 4 + 3], Is.GreaterThan(245));
        }
        Assert.That(images.Pixels.AsSpan(16, 16).ToArray(), Is.All.EqualTo(77));
    }

    [Test]
    public void GrayscaleIsLuminanceAndRgbKeepsPlanes()
    {
        WriteImage(tmp.File("red.png"), 2, 2, (_, _) => new Rgb24(255, 0, 0));
        WriteImage(tmp.File("teal.png"), 2, 2, (_, _) => new Rgb24(0, 128, 200));

        var rgb = ImageFolderReader.Read(tmp.Path);
        Assert.That(rgb.Channels, Is.EqualTo(3), "coloured images default to RGB");
        // red.png first: R plane 255, G 0, B 0 (NCHW planes), then teal.png.
        Assert.That(rgb.Pixels.AsSpan(0, 12).ToArray(), Is.EqualTo(new byte[] { 255, 255, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0 }));
        Assert.That(rgb.Pixels.AsSpan(12, 12).ToArray(), Is.EqualTo(new byte[] { 0, 0, 0, 0, 128, 128, 128, 128, 200, 200, 200, 200 }));

        var gray = ImageFolderReader.Read(tmp.Path, channels: 1);
        Assert.That(gray.Channels, Is.EqualTo(1));
        // 0.299·255 = 76.2; 0.587·128 + 0.114·200 = 97.9 (PIL's convert("L") gives 76 and 98).
        Assert.That(gray.Pixels, Is.EqualTo(new byte[] { 76, 76, 76, 76, 98, 98, 98, 98 }));
    }

    [Test]
    public void GrayImagesCanBeReadAsRgb()
    {
        WriteImage(tmp.File("g.png"), 2, 2, (x, y) => new Rgb24((byte)(x + 2 * y), (byte)(x + 2 * y), (byte)(x + 2 * y)));
        var rgb = ImageFolderReader.Read(tmp.Path, channels: 3);
        Assert.That(rgb.Pixels, Is.EqualTo(new byte[] { 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3 }));
    }

    [Test]
    public void RefusesAnAbsurdSizeBeforeDecoding()
    {
        // A PNG whose header claims 50000×40000 (2 Gpx) and that has no pixel data: decoding it would
        // fail differently or allocate gigabytes; the header check must refuse it first.
        string path = tmp.File("huge.png");
        File.WriteAllBytes(path, PngHeaderOnly(50000, 40000));
        var e = Assert.Throws<DataException>(() => ImageFolderReader.Read(tmp.Path))!;
        Assert.That(e.Message, Does.Contain(path).And.Contain("50000x40000").And.Contain("refusing"));
        Assert.That(e.Message, Does.Not.Contain('\n'));
    }

    [Test]
    public void RefusesAnImageLongerThanTheSideLimit()
    {
        WriteImage(tmp.File("strip.png"), 9000, 2, (_, _) => new Rgb24(0, 0, 0));
        var e = Assert.Throws<DataException>(() => ImageFolderReader.Read(tmp.Path))!;
        Assert.That(e.Message, Does.Contain("strip.png").And.Contain("9000x2"));
    }

    [Test]
    public void RefusesACorruptFile()
    {
        WriteImage(tmp.File("a.png"), 4, 4, (_, _) => new Rgb24(0, 0, 0));
        string bad = tmp.File("b.png");
        File.WriteAllBytes(bad, Encoding.ASCII.GetBytes("this is not a png at all"));
        var e = Assert.Throws<DataException>(() => ImageFolderReader.Read(tmp.Path))!;
        Assert.That(e.Message, Does.Contain(bad).And.Contain("not a readable image"));
        Assert.That(e.Message, Does.Not.Contain('\n'));

        // A real PNG cut in the middle of its pixel data.
        File.Delete(bad);
        WriteImage(bad, 64, 64, (x, y) => new Rgb24((byte)(x * 3), (byte)(y * 3), (byte)(x ^ y)));
        var bytes = File.ReadAllBytes(bad);
        File.WriteAllBytes(bad, bytes.AsSpan(0, bytes.Length / 2).ToArray());
        e = Assert.Throws<DataException>(() => ImageFolderReader.Read(tmp.Path))!;
        Assert.That(e.Message, Does.Contain(bad));
    }

    [Test]
    public void RefusesAGifWithAnImageExtension()
    {
        string path = tmp.File("a.png");
        using (var img = new Image<Rgb24>(4, 4)) img.SaveAsGif(path);
        var e = Assert.Throws<DataException>(() => ImageFolderReader.Read(tmp.Path))!;
        Assert.That(e.Message, Does.Contain(path).And.Contain("GIF"));
    }

    [Test]
    public void AnEmptyFolderIsAnError()
    {
        var e = Assert.Throws<DataException>(() => ImageFolderReader.Read(tmp.Path))!;
        Assert.That(e.Message, Does.Contain(tmp.Path).And.Contain("no image files"));
        File.WriteAllText(tmp.File("readme.txt"), "x");
        Assert.Throws<DataException>(() => ImageFolderReader.Read(tmp.Path));
        var missing = Path.Combine(tmp.Path, "missing");
        Assert.That(Assert.Throws<DataException>(() => ImageFolderReader.Read(missing))!.Message, Does.Contain("not found"));
    }

    [Test]
    public void RefusesBadOptions()
    {
        WriteImage(tmp.File("a.png"), 4, 4, (_, _) => new Rgb24(0, 0, 0));
        Assert.That(Assert.Throws<DataException>(() => ImageFolderReader.Read(tmp.Path, channels: 2))!.Message, Does.Contain("2 channels"));
        Assert.That(Assert.Throws<DataException>(() => ImageFolderReader.Read(tmp.Path, size: 0))!.Message, Does.Contain("image size 0"));
    }

    [Test]
    public void TransformResizesAndConvertsIdxImages()
    {
        // Two 4×4 gray images, one uniform (stays exact under resizing), to 8×8 RGB.
        var pixels = new byte[32];
        Array.Fill(pixels, (byte)90, 0, 16);
        for (int i = 16; i < 32; i++) pixels[i] = (byte)(i * 5);
        var src = new ByteImages(pixels, 2, 1, 4, 4);
        var t = ImageFolderReader.Transform(src, 8, 3, "test");
        Assert.That((t.Count, t.Channels, t.Height, t.Width), Is.EqualTo((2, 3, 8, 8)));
        Assert.That(t.Pixels.AsSpan(0, 192).ToArray(), Is.All.EqualTo(90));
        var second = t.Pixels.AsSpan(192, 192);
        Assert.That(second[..64].ToArray(), Is.EqualTo(second.Slice(64, 64).ToArray()), "gray repeated into R and G");
        Assert.That(second[..64].ToArray(), Is.EqualTo(second.Slice(128, 64).ToArray()), "gray repeated into R and B");
        Assert.That(ImageFolderReader.Transform(src, null, null, "test"), Is.SameAs(src), "nothing asked, nothing done");
    }

    /// <summary>A PNG signature and IHDR chunk (with a correct CRC) for w×h RGB, then IEND: no pixel data.</summary>
    internal static byte[] PngHeaderOnly(int w, int h)
    {
        using var ms = new MemoryStream();
        ms.Write([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]);
        var ihdr = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(ihdr, w);
        BinaryPrimitives.WriteInt32BigEndian(ihdr.AsSpan(4), h);
        ihdr[8] = 8; ihdr[9] = 2; // 8-bit RGB
        WriteChunk(ms, "IHDR", ihdr);
        WriteChunk(ms, "IEND", []);
        return ms.ToArray();
    }

    private static void WriteChunk(Stream s, string type, byte[] data)
    {
        var len = new byte[4];
        BinaryPrimitives.WriteInt32BigEndian(len, data.Length);
        s.Write(len);
        var body = Encoding.ASCII.GetBytes(type).Concat(data).ToArray();
        s.Write(body);
        var crc = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(crc, Crc32(body));
        s.Write(crc);
    }

    private static uint Crc32(byte[] data)
    {
        uint c = 0xFFFFFFFF;
        foreach (byte b in data)
        {
            c ^= b;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320 ^ (c >> 1) : c >> 1;
        }
        return c ^ 0xFFFFFFFF;
    }
}
