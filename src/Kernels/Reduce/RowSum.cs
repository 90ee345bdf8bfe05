using ILGPU;

namespace IlgpuDdpm.Kernels.Reduce;

/// <summary>Fixed-order sums every per-thread reduction shares (bit-repeatable: the order depends only on the length).</summary>
public static class RowSum
{
    /// <summary>
    /// Σ v[start .. start + length): element k goes to accumulator k mod 4, then a tail into the first,
    /// combined as (s0 + s1) + (s2 + s3).
    /// </summary>
    public static float Of(ArrayView<float> v, int start, int length)
    {
        int end = start + length;
        float s0 = 0f, s1 = 0f, s2 = 0f, s3 = 0f;
        int k = start;
        for (; k + 3 < end; k += 4)
        {
            s0 += v[k];
            s1 += v[k + 1];
            s2 += v[k + 2];
            s3 += v[k + 3];
        }
        for (; k < end; k++) s0 += v[k];
        return (s0 + s1) + (s2 + s3);
    }
}
