using System.Globalization;
using IlgpuDdpm.Kernels.Device;

namespace IlgpuDdpm.Cli;

/// <summary>Numbers and durations for people.</summary>
internal static class Format
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>e.g. "139.8 GiB", "512 MiB", "12 KiB".</summary>
    public static string Bytes(long bytes)
    {
        if (bytes <= 0) return "-";
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        double v = bytes;
        int u = 0;
        while (v >= 1024 && u < units.Length - 1) { v /= 1024; u++; }
        return u == 0 ? $"{bytes} B" : v.ToString(v >= 100 ? "F0" : "F1", Inv) + " " + units[u];
    }

    /// <summary>e.g. "35,746,307".</summary>
    public static string Count(long n) => n.ToString("N0", Inv);

    /// <summary>e.g. "2h 05m", "3m 12s", "4.2s".</summary>
    public static string Duration(TimeSpan t)
    {
        if (t < TimeSpan.Zero || t.TotalDays > 365) return "?";
        if (t.TotalHours >= 1) return $"{(int)t.TotalHours}h {t.Minutes:D2}m";
        if (t.TotalMinutes >= 1) return $"{t.Minutes}m {t.Seconds:D2}s";
        return t.TotalSeconds.ToString("F1", Inv) + "s";
    }

    /// <summary>The device in one line (<see cref="ComputeDevice.Description"/>).</summary>
    public static string Device(ComputeDevice device) => device.Description;

    /// <summary>Invariant-culture number.</summary>
    public static string Num(double v, string format) => v.ToString(format, Inv);
}
