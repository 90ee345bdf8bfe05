using System.CommandLine;
using IlgpuDdpm.Diffusion;
using IlgpuDdpm.Diffusion.Checkpoints;

namespace IlgpuDdpm.Cli.Commands;

/// <summary>
/// <c>ddpm forward</c>: one evaluation of ε_θ(x_t, t) on tensors from a safetensors file, written to
/// another — so any other implementation (e.g. PyTorch with the same weights) can be compared with this one.
/// </summary>
internal static class ForwardCommand
{
    public static Command Create(CliContext context)
    {
        var input = SafeTensorsFile("--input", "safetensors file with 'x' [N, C, H, W] F32 (noisy images x_t) and 't' [N] I64, I32 or F32 (0-based timesteps, 0..T-1).");
        var output = SafeTensorsFile("--output", "safetensors file to write with 'eps' [N, C, H, W] F32, the predicted noise ε_θ(x_t, t).");
        var model = new ModelOptions();
        var command = new Command("forward", "Run the noise-prediction network ε_θ(x_t, t) once (no gradient, no dropout) on tensors from a safetensors file and write its output.")
        {
            model.Checkpoint, input, output, model.RawWeights, model.Device,
        };
        command.SetAction(parse =>
        {
            string inPath = parse.GetValue(input)!, outPath = parse.GetValue(output)!;
            SampleCommand.CheckWritable(outPath, "--output");
            var file = SafeTensors.Read(inPath);

            using var opened = model.Open(context, parse);
            var (dev, loaded) = (opened.Device, opened.Loaded);
            var cfg = loaded.Config;
            int T = loaded.Schedule.Timesteps;
            var (x, shape, t) = ReadInputs(file, cfg.InChannels, cfg.ImageSize, T);

            var eps = loaded.Model.Predict(x, t);
            SafeTensors.Write(outPath, [SafeTensor.F32("eps", shape, eps)], new Dictionary<string, string>
            {
                ["checkpoint"] = model.CheckpointPath(parse),
                ["step"] = loaded.Step.ToString(System.Globalization.CultureInfo.InvariantCulture),
                ["weights"] = loaded.UsedEma ? "ema" : "raw",
                ["config"] = cfg.ToJson(),
            });
            context.Output.WriteLine($"wrote {outPath}: eps [{string.Join(", ", shape)}] (model at step {loaded.Step:N0}, {(loaded.UsedEma ? "EMA" : "raw")} weights, {dev.Kind})");
            return 0;
        });
        return command;
    }

    private static Option<string> SafeTensorsFile(string name, string description) =>
        new(name) { Description = description, HelpName = "FILE", Required = true };

    /// <summary>Checks 'x' and 't' against the model (one clear line when they do not fit) and converts t to int.</summary>
    internal static (float[] X, int[] Shape, int[] T) ReadInputs(SafeTensorFile file, int channels, int size, int timesteps)
    {
        string where = file.Path;
        if (!file.Tensors.TryGetValue("x", out var x))
            throw new CliException($"{where}: has no tensor 'x'; expected x [N, {channels}, {size}, {size}] F32 and t [N]");
        if (!file.Tensors.TryGetValue("t", out var t))
            throw new CliException($"{where}: has no tensor 't'; expected t [N] (I64, I32 or F32) beside x");
        if (x.DType != SafeTensorDType.F32)
            throw new CliException($"{where}: 'x' is {x.DType}; expected F32");
        if (x.Shape.Length != 4 || x.Shape[0] < 1 || x.Shape[1] != channels || x.Shape[2] != size || x.Shape[3] != size)
            throw new CliException($"{where}: 'x' has shape {x.ShapeText}; the model expects [N, {channels}, {size}, {size}] with N ≥ 1");
        int n = x.Shape[0];
        if (t.Shape.Length != 1 || t.Shape[0] != n)
            throw new CliException($"{where}: 't' has shape {t.ShapeText}; expected [{n}] (one timestep per image of x)");
        var steps = new int[n];
        for (int i = 0; i < n; i++)
        {
            double v = t.DType switch
            {
                SafeTensorDType.I64 => t.Longs![i],
                SafeTensorDType.I32 => t.Ints![i],
                _ => t.Floats![i],
            };
            if (!(v >= 0 && v <= timesteps - 1 && v == Math.Floor(v)))
                throw new CliException($"{where}: t[{i}] = {v}; expected an integer timestep in 0..{timesteps - 1} (0-based, T = {timesteps})");
            steps[i] = (int)v;
        }
        foreach (var value in x.Floats!)
            if (!float.IsFinite(value))
                throw new CliException($"{where}: 'x' holds {value}; expected finite values");
        return (x.Floats!, x.Shape, steps);
    }
}
