using System.Globalization;
using System.Text;

namespace IlgpuDdpm.Network;

/// <summary>One row of a <see cref="ModelSummary"/>.</summary>
/// <param name="Name">Dotted layer name (the prefix of its parameters).</param>
/// <param name="Kind">What the layer is.</param>
/// <param name="Description">e.g. "ResBlock 32+32→32", "Conv3x3 s2 32→32".</param>
/// <param name="OutputShape">Output per image: [C, H, W] (or [4ch] for the time embedding).</param>
/// <param name="Parameters">Trainable values.</param>
/// <param name="GFlop">Forward GFLOP per image: 2 × multiply-adds of its convs, linears and attention matmuls.</param>
public sealed record SummaryRow(string Name, LayerKind Kind, string Description, int[] OutputShape, long Parameters, double GFlop);

/// <summary>
/// The U-Net layer by layer — name, output shape, parameters, forward GFLOP per image — with totals,
/// computed from the config alone by the planning pass of <see cref="UNetLayout"/> (no device, no kernels). FLOPs count 2 × the multiply-adds of every
/// convolution, linear layer and the two attention matmuls (qᵀk and v·wᵀ); norms, activations,
/// additions, softmax and resampling are not counted.
/// </summary>
public sealed class ModelSummary
{
    private ModelSummary(UNetConfig config, IReadOnlyList<SummaryRow> rows)
    {
        Config = config;
        Rows = rows;
    }

    /// <summary>The summary of the U-Net of <paramref name="config"/> (validated; one-line ArgumentException otherwise).</summary>
    public static ModelSummary For(UNetConfig config) => For(UNetLayout.Plan(config));

    /// <summary>The summary of a planned layout: one row per layer, as the planning pass described it.</summary>
    public static ModelSummary For(UNetLayout layout) =>
        new(layout.Config, layout.Layers.Select(l => new SummaryRow(l.Name, l.Kind, l.Description, l.OutputShape, l.ParameterCount, l.Flops / 1e9)).ToArray());

    /// <summary>The config summarised.</summary>
    public UNetConfig Config { get; }

    /// <summary>One row per layer, forward order.</summary>
    public IReadOnlyList<SummaryRow> Rows { get; }

    /// <summary>Total trainable values.</summary>
    public long TotalParameters => Rows.Sum(r => r.Parameters);

    /// <summary>Total forward GFLOP per image.</summary>
    public double TotalGFlop => Rows.Sum(r => r.GFlop);

    /// <summary>Forward + backward GFLOP per image of a training step (backward ≈ 2 × forward).</summary>
    public double TrainingGFlopPerImage => 3 * TotalGFlop;

    /// <summary>
    /// The table as text (what <c>ddpm summary</c> prints): one row per layer with MFLOP per image
    /// (so that small layers stay readable), then the totals in GFLOP.
    /// </summary>
    public override string ToString()
    {
        var inv = CultureInfo.InvariantCulture;
        string Shape(int[] s) => string.Join("×", s);
        int nameW = Math.Max("layer".Length, Rows.Max(r => r.Name.Length));
        int descW = Math.Max("what".Length, Rows.Max(r => r.Description.Length));
        int shapeW = Math.Max("output".Length, Rows.Max(r => Shape(r.OutputShape).Length));
        var sb = new StringBuilder();
        sb.Append(inv, $"U-Net {Config}\n");
        sb.Append(inv, $"{"layer".PadRight(nameW)}  {"what".PadRight(descW)}  {"output".PadRight(shapeW)}  {"params",12}  {"MFLOP/img",10}\n");
        foreach (var r in Rows)
            sb.Append(inv, $"{r.Name.PadRight(nameW)}  {r.Description.PadRight(descW)}  {Shape(r.OutputShape).PadRight(shapeW)}  {r.Parameters,12:N0}  {r.GFlop * 1e3,10:F2}\n");
        sb.Append(inv, $"{"total".PadRight(nameW)}  {"".PadRight(descW)}  {"".PadRight(shapeW)}  {TotalParameters,12:N0}  {TotalGFlop * 1e3,10:F2}\n");
        sb.Append(inv, $"{TotalParameters / 1e6:F3}M parameters; forward {TotalGFlop:F4} GFLOP per image, a training step ≈ {TrainingGFlopPerImage:F4} GFLOP per image\n");
        return sb.ToString();
    }
}
