using System.Runtime.CompilerServices;
using ILGPU;

namespace IlgpuDdpm.Kernels.Random;

/// <summary>
/// A Philox4x32-10 key: a 64-bit seed, a 32-bit stream id (which consumer: dropout, noising, sampling…)
/// and a 64-bit offset (how many numbers of that stream were already used). Element <c>i</c> of a draw
/// is a pure function of (seed, stream, offset + i), so the same key gives the same numbers on every
/// accelerator and in any launch order (DESIGN.md §2).
/// </summary>
public readonly record struct PhiloxKey(ulong Seed, uint Stream, ulong Offset)
{
    /// <summary>The key for the next <paramref name="count"/> numbers after this draw.</summary>
    public PhiloxKey Advance(long count) => this with { Offset = Offset + (ulong)count };
}

/// <summary>
/// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011), usable inside
/// kernels and on the host. Counter = (block lo, block hi, stream, 0), key = (seed lo, seed hi);
/// ten rounds. Each block gives four 32-bit words, so number <c>n</c> of a stream is word <c>n % 4</c>
/// of block <c>n / 4</c>.
/// </summary>
public static class Philox
{
    private const uint M0 = 0xD2511F53, M1 = 0xCD9E8D57;
    private const uint W0 = 0x9E3779B9, W1 = 0xBB67AE85;

    /// <summary>One Philox4x32-10 block for the counter <paramref name="block"/> of <paramref name="stream"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Block(ulong seed, uint stream, ulong block, out uint x0, out uint x1, out uint x2, out uint x3)
    {
        uint c0 = (uint)block, c1 = (uint)(block >> 32), c2 = stream, c3 = 0;
        uint k0 = (uint)seed, k1 = (uint)(seed >> 32);
        // Ten rounds, written out: ILGPU does not unroll loops.
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1);
        x0 = c0; x1 = c1; x2 = c2; x3 = c3;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Round(ref uint c0, ref uint c1, ref uint c2, ref uint c3, uint k0, uint k1)
    {
        ulong p0 = (ulong)M0 * c0;
        ulong p1 = (ulong)M1 * c2;
        uint hi0 = (uint)(p0 >> 32), lo0 = (uint)p0;
        uint hi1 = (uint)(p1 >> 32), lo1 = (uint)p1;
        uint n0 = hi1 ^ c1 ^ k0;
        uint n2 = hi0 ^ c3 ^ k1;
        c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
    }

    /// <summary>Word <paramref name="index"/> of the stream: a uniformly distributed 32-bit integer.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Bits(ulong seed, uint stream, ulong index)
    {
        Block(seed, stream, index >> 2, out uint x0, out uint x1, out uint x2, out uint x3);
        uint lane = (uint)index & 3u;
        return lane == 0 ? x0 : lane == 1 ? x1 : lane == 2 ? x2 : x3;
    }

    /// <summary>Uniform in [0, 1) with 24 bits of resolution.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToUniform(uint bits) => (bits >> 8) * (1.0f / 16777216.0f);

    /// <summary>Uniform in (0, 1], safe under a logarithm.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToUniformNonZero(uint bits) => ((bits >> 8) + 1u) * (1.0f / 16777216.0f);

    /// <summary>Number <paramref name="index"/> of the stream as a uniform float in [0, 1).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Uniform(ulong seed, uint stream, ulong index) => ToUniform(Bits(seed, stream, index));

    /// <summary>
    /// Number <paramref name="index"/> of the stream as a standard normal, by Box–Muller on the word pair
    /// (0,1) or (2,3) of its block: even indices take r·cos θ, odd ones r·sin θ, so the four normals of
    /// a block are independent.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Normal(ulong seed, uint stream, ulong index)
    {
        Block(seed, stream, index >> 2, out uint x0, out uint x1, out uint x2, out uint x3);
        uint lane = (uint)index & 3u;
        BoxMuller(lane < 2 ? x0 : x2, lane < 2 ? x1 : x3, out float even, out float odd);
        return (lane & 1u) == 0 ? even : odd;
    }

    /// <summary>The Box–Muller pair of words (a, b): r·cos θ and r·sin θ, r = √(−2 ln u_a), θ = 2π·u_b.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void BoxMuller(uint a, uint b, out float cos, out float sin)
    {
        float radius = MathF.Sqrt(-2.0f * MathF.Log(ToUniformNonZero(a)));
        float theta = 6.28318530717958647692f * ToUniform(b);
        cos = radius * MathF.Cos(theta);
        sin = radius * MathF.Sin(theta);
    }

    /// <summary>Number <paramref name="index"/> of the stream as an integer in [0, <paramref name="count"/>), by 64-bit multiply-shift.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Below(ulong seed, uint stream, ulong index, int count) =>
        (int)(((ulong)Bits(seed, stream, index) * (uint)count) >> 32);
}
