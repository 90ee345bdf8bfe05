namespace IlgpuDdpm.Tests.Diffusion;

/// <summary>
/// A tiny training set for end-to-end tests: four fixed 1×8×8 shapes in {−1, +1} (a square outline, a
/// cross, a horizontal and a vertical bar), repeated to fill batches. Small enough that the `tiny` U-Net
/// learns it in a few hundred CPU steps, distinct enough that "a sample looks like a training image" is a
/// clear L2 statement.
/// </summary>
public static class SyntheticImages
{
    public const int Size = 8;
    public const int Pixels = Size * Size;

    /// <summary>The four distinct images, [4, 1, 8, 8].</summary>
    public static float[][] Shapes { get; } = Build();

    /// <summary><paramref name="count"/> images cycling through the shapes, [count, 1, 8, 8].</summary>
    public static float[] Batch(int count)
    {
        var data = new float[count * Pixels];
        for (int i = 0; i < count; i++) Shapes[i % Shapes.Length].CopyTo(data, i * Pixels);
        return data;
    }

    /// <summary>Mean over images of the L2 distance from each image to its nearest training shape.</summary>
    public static double MeanNearestDistance(float[] images, int count)
    {
        double total = 0;
        for (int i = 0; i < count; i++)
        {
            double best = double.MaxValue;
            foreach (var shape in Shapes)
            {
                double s = 0;
                for (int p = 0; p < Pixels; p++) { double d = images[i * Pixels + p] - shape[p]; s += d * d; }
                best = Math.Min(best, Math.Sqrt(s));
            }
            total += best;
        }
        return total / count;
    }

    private static float[][] Build()
    {
        var square = new float[Pixels];
        var cross = new float[Pixels];
        var horizontal = new float[Pixels];
        var vertical = new float[Pixels];
        for (int y = 0; y < Size; y++)
            for (int x = 0; x < Size; x++)
            {
                int i = y * Size + x;
                square[i] = (y is 1 or 6 && x is >= 1 and <= 6) || (x is 1 or 6 && y is >= 1 and <= 6) ? 1 : -1;
                cross[i] = x == y || x == Size - 1 - y ? 1 : -1;
                horizontal[i] = y is 3 or 4 ? 1 : -1;
                vertical[i] = x is 3 or 4 ? 1 : -1;
            }
        return [square, cross, horizontal, vertical];
    }
}
