using System.Globalization;

namespace IlgpuDdpm.Cli.Training;

/// <summary>
/// The one-writer lock of a run folder: an exclusive OS lock (<see cref="FileShare.None"/>, which .NET takes
/// as <c>flock(LOCK_EX)</c> on Unix and a sharing lock on Windows) on <c>&lt;run&gt;/.lock</c>, held for as
/// long as the process writes into the folder. The OS drops it when the process ends, however it ends, so a
/// killed trainer never leaves a lock that blocks. The holder's pid goes into <c>.lock.pid</c> beside it (the
/// locked file itself cannot be opened by another process), so a refused process can name the holder.
/// Readers (<c>sample</c>, <c>eval</c>, <c>forward</c>) take no lock: the checkpoint manifest gives them a
/// complete pair at any moment.
/// </summary>
internal sealed class RunLock : IDisposable
{
    /// <summary>The locked file in a run folder.</summary>
    public const string LockFile = ".lock";

    /// <summary>The file naming the holder (pid, host, since when).</summary>
    public const string HolderFile = ".lock.pid";

    private readonly FileStream stream;

    private RunLock(FileStream stream) => this.stream = stream;

    /// <summary>
    /// Takes the lock of <paramref name="folder"/> (created if missing) or throws a <see cref="CliException"/>
    /// naming the folder and the process that holds it.
    /// </summary>
    public static RunLock Acquire(string folder)
    {
        Directory.CreateDirectory(folder);
        string path = Path.Combine(folder, LockFile);
        FileStream stream;
        try
        {
            stream = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException) when (File.Exists(path))
        {
            throw new CliException($"{folder}: in use by another ddpm process ({Holder(folder)}); wait for it to finish or stop it, or choose another folder");
        }
        try
        {
            // Written after the lock is ours: a stale file from a killed holder is replaced here.
            string holder = Path.Combine(folder, HolderFile), temp = holder + ".tmp";
            File.WriteAllText(temp, string.Create(CultureInfo.InvariantCulture,
                $"{Environment.ProcessId} {Environment.MachineName} {DateTime.UtcNow:yyyy-MM-ddTHH:mm:ssZ}\n"));
            File.Move(temp, holder, overwrite: true);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
        return new RunLock(stream);
    }

    /// <summary>"pid N on HOST" from the holder file, or a hint when it is not (yet) written.</summary>
    private static string Holder(string folder)
    {
        try
        {
            var parts = File.ReadAllText(Path.Combine(folder, HolderFile)).Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (parts.Length >= 1 && int.TryParse(parts[0], NumberStyles.Integer, CultureInfo.InvariantCulture, out int pid))
                return parts.Length >= 2 ? $"pid {pid} on {parts[1]}" : $"pid {pid}";
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return "pid not yet recorded";
    }

    /// <summary>Releases the lock (the files stay; an unlocked .lock means nothing).</summary>
    public void Dispose() => stream.Dispose();
}
