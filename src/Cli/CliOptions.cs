using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;

namespace IlgpuDdpm.Cli;

/// <summary>Options several commands share, and validators that turn bad values into one-line parse errors.</summary>
internal static class CliOptions
{
    /// <summary>The accelerator names <c>--device</c> accepts.</summary>
    public static readonly string[] DeviceNames = ["auto", "cuda", "opencl", "cpu"];

    /// <summary><c>--device auto|cuda|opencl|cpu</c>; unset means <c>DDPM_DEVICE</c>, else <c>auto</c>.</summary>
    public static Option<string?> Device() => new Option<string?>("--device")
    {
        Description = "Accelerator: auto (CUDA, then OpenCL, then the CPU), cuda, opencl or cpu. Default: $DDPM_DEVICE, else auto.",
        HelpName = "auto|cuda|opencl|cpu",
    }.OneOf(DeviceNames);

    /// <summary><c>--seed N</c> (a 64-bit unsigned integer).</summary>
    public static Option<ulong> Seed(string description) => new("--seed")
    {
        Description = description,
        DefaultValueFactory = _ => 0UL,
    };

    /// <summary><c>--checkpoint DIR|FILE</c>, required.</summary>
    public static Option<string> Checkpoint() => new("--checkpoint")
    {
        Description = "A training run folder (or checkpoint folder) holding model.safetensors, or the model.safetensors file itself.",
        HelpName = "DIR|FILE",
        Required = true,
    };

    /// <summary><c>--raw-weights</c>: the raw weights instead of the EMA weights.</summary>
    public static Option<bool> RawWeights() => new("--raw-weights")
    {
        Description = "Use the raw (last optimizer step) weights instead of the exponential moving average the sampler normally uses.",
    };

    /// <summary>Accept only <paramref name="values"/> (case-insensitive), with a one-line error naming them.</summary>
    public static Option<T> OneOf<T>(this Option<T> option, params string[] values)
    {
        option.Validators.Add(r => CheckOneOf(r, option.Name, values));
        return option;
    }

    private static void CheckOneOf(OptionResult r, string name, string[] values)
    {
        if (r.Tokens.Count == 0) return;
        var value = r.Tokens[^1].Value;
        if (!values.Contains(value.Trim(), StringComparer.OrdinalIgnoreCase))
            r.AddError($"{name} '{value}' is not one of {string.Join(", ", values)}");
    }

    /// <summary>The value must be ≥ 1.</summary>
    public static Option<int> Positive(this Option<int> option) => Range(option, 1, int.MaxValue);

    /// <summary>The value must be ≥ 0.</summary>
    public static Option<int> NonNegative(this Option<int> option) => Range(option, 0, int.MaxValue);

    /// <summary>The value must lie in [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public static Option<int> Range(this Option<int> option, int min, int max)
    {
        option.Validators.Add(r =>
        {
            if (r.Tokens.Count == 0) return;
            if (!int.TryParse(r.Tokens[^1].Value, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v)) return;
            if (v < min || v > max) r.AddError($"{option.Name} must be {Describe(min, max)}, got {v}");
        });
        return option;
    }

    /// <summary>The value (nullable) must be ≥ 1 when given.</summary>
    public static Option<int?> Positive(this Option<int?> option)
    {
        option.Validators.Add(r =>
        {
            if (r.Tokens.Count == 0) return;
            if (!int.TryParse(r.Tokens[^1].Value, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v)) return;
            if (v < 1) r.AddError($"{option.Name} must be a positive integer, got {v}");
        });
        return option;
    }

    /// <summary>The value must be a finite number in the given range (<paramref name="minExclusive"/> excludes the minimum).</summary>
    public static Option<T> Range<T>(this Option<T> option, double min, double max, bool minExclusive = false, bool maxExclusive = false)
    {
        option.Validators.Add(r =>
        {
            if (r.Tokens.Count == 0) return;
            if (!double.TryParse(r.Tokens[^1].Value, NumberStyles.Float, CultureInfo.InvariantCulture, out double v)) return;
            bool ok = double.IsFinite(v) && (minExclusive ? v > min : v >= min) && (maxExclusive ? v < max : v <= max);
            if (!ok)
            {
                string lo = minExclusive ? $"> {Num(min)}" : $"≥ {Num(min)}";
                string hi = double.IsPositiveInfinity(max) ? "" : maxExclusive ? $" and < {Num(max)}" : $" and ≤ {Num(max)}";
                r.AddError($"{option.Name} must be a number {lo}{hi}, got {r.Tokens[^1].Value}");
            }
        });
        return option;
    }

    private static string Describe(int min, int max) =>
        max == int.MaxValue ? (min == 1 ? "a positive integer" : min == 0 ? "a non-negative integer" : $"an integer ≥ {min}")
                            : $"an integer from {min} to {max}";

    private static string Num(double v) => v.ToString("G", CultureInfo.InvariantCulture);

    /// <summary>True when the user typed the option (not just its default).</summary>
    public static bool WasGiven(this ParseResult parse, Option option) => parse.GetResult(option) is { Implicit: false };
}
