namespace IlgpuDdpm.Cli;

/// <summary>Entry point of the <c>ddpm</c> command.</summary>
public static class Program
{
    public static int Main(string[] args)
    {
        Console.Error.WriteLine("ddpm: no commands yet");
        return 1;
    }
}
