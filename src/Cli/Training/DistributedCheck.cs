using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Json;
using IlgpuDdpm.Diffusion.Data;
using IlgpuDdpm.Diffusion.Distributed;

namespace IlgpuDdpm.Cli.Training;

/// <summary>
/// The start-up check of a data-parallel run (docs/distributed.md): every rank must train the same run on the
/// same data, else the replicas silently drift apart. Rank 0's SHA-256 of the run's options and of the
/// decoded training images is broadcast; a rank that computed another one makes every rank refuse in one line.
/// </summary>
internal static class DistributedCheck
{
    public static void SameRun(ICommunicator ranks, RunConfig config, ImageDataset data)
    {
        byte[] configHash = SHA256.HashData(JsonSerializer.SerializeToUtf8Bytes(config));
        using var dataHasher = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        dataHasher.AppendData(MemoryMarshal.AsBytes<int>([data.Count, data.Channels, data.Height, data.Width]));
        dataHasher.AppendData(MemoryMarshal.AsBytes(data.Data.AsSpan()));
        byte[] dataHash = dataHasher.GetHashAndReset();

        byte[] rootHashes = [.. configHash, .. dataHash];
        ranks.Broadcast(rootHashes);
        // Which differ, as seen by the worst rank: bit 0 the options, bit 1 the data.
        Span<double> mismatch =
        [
            configHash.AsSpan().SequenceEqual(rootHashes.AsSpan(0, 32)) ? 0 : 1,
            dataHash.AsSpan().SequenceEqual(rootHashes.AsSpan(32, 32)) ? 0 : 1,
            rootHashes.AsSpan(0, 32).SequenceEqual(configHash) && rootHashes.AsSpan(32).SequenceEqual(dataHash) ? -1 : ranks.Rank,
        ];
        ranks.AllReduceMax(mismatch);
        if (mismatch[0] == 0 && mismatch[1] == 0) return;
        string what = mismatch[0] > 0 && mismatch[1] > 0 ? "options and training data" : mismatch[0] > 0 ? "options" : "training data";
        throw new UsageException($"the ranks were started with different {what} (rank {mismatch[2]:F0} differs from rank 0, compared by SHA-256 at start); " +
                                 "start every rank with the same command line and the same data");
    }
}
