using IlgpuDdpm.Kernels;

namespace IlgpuDdpm.Diffusion.Distributed;

/// <summary>An MPI launch this program cannot join (another MPI implementation, no Open MPI library); one line.</summary>
public sealed class DistributedError(string message) : UserError(message);

/// <summary>
/// Decides from the environment whether this process was started by an MPI launcher, and opens the matching
/// communicator. Open MPI's <c>mpirun</c>/<c>mpiexec</c> set <c>OMPI_COMM_WORLD_SIZE</c> and
/// <c>OMPI_COMM_WORLD_RANK</c>; Slurm's <c>srun --mpi=pmix</c> sets <c>PMIX_RANK</c>. Without either, the run is a plain
/// single process and no MPI library is touched. MPICH, Intel MPI and MVAPICH launchers (Hydra: <c>PMI_RANK</c>,
/// <c>PMI_SIZE</c>, <c>MPI_LOCALRANKID</c>) are refused in one line: their ABI (libmpi.so.12) differs from Open MPI's.
/// </summary>
public static class Launcher
{
    /// <summary>Environment variables whose presence means "started by Open MPI's mpirun or a PMIx launcher".</summary>
    public static readonly string[] OpenMpiVariables = ["OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"];

    /// <summary>Environment variables set by launchers of other MPI implementations (MPICH/Intel MPI's Hydra, old PMI-1 srun).</summary>
    public static readonly string[] OtherMpiVariables = ["PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPICH_INTERFACE_HOSTNAME", "HYDRA_CONTROL_FD"];

    /// <summary>The variable that shows an Open MPI launch, or null for a plain process.</summary>
    public static string? OpenMpiVariable(Func<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariable;
        return OpenMpiVariables.FirstOrDefault(v => !string.IsNullOrEmpty(environment(v)));
    }

    /// <summary>
    /// The communicator for this process: <see cref="SingleProcess"/> when no launcher variable is set, an
    /// <see cref="MpiCommunicator"/> under Open MPI; throws <see cref="DistributedError"/> under another MPI.
    /// </summary>
    public static ICommunicator Open(Func<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariable;
        string? openMpi = OpenMpiVariable(environment);
        if (openMpi is null)
        {
            string? other = OtherMpiVariables.FirstOrDefault(v => !string.IsNullOrEmpty(environment(v)));
            if (other is not null)
                throw new DistributedError($"started by an MPI launcher other than Open MPI ({other}={environment(other)} is set: MPICH, Intel MPI or MVAPICH); " +
                                           "ddpm supports Open MPI's ABI (libmpi.so.40) only: launch with Open MPI's mpirun, or unset it for a single process");
            return SingleProcess.Instance;
        }
        int localRank = IntFrom(environment, "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID") ?? 0;
        int? localSize = IntFrom(environment, "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE");
        return MpiCommunicator.Initialize(openMpi, localRank, localSize);
    }

    /// <summary>Seconds of grace below which <see cref="InterruptNote"/> warns: enough for a step and a save of most runs.</summary>
    public const int SufficientKillTimeout = 10;

    /// <summary>
    /// What Ctrl-C on Open MPI's mpirun does to this run, when that is too little to save a checkpoint; null
    /// otherwise (and for a plain process or another launcher). Measured with Open MPI 4.1 (docs/distributed.md):
    /// on SIGINT mpirun sends the ranks SIGCONT at once, SIGTERM after <c>odls_base_sigkill_timeout</c> seconds
    /// (default 1) and SIGKILL after as many again. ddpm saves on SIGTERM, so it has that one timeout to finish
    /// the step and write the checkpoint. mpirun passes <c>--mca</c> settings to the ranks as
    /// <c>OMPI_MCA_*</c> variables, which is how a rank sees the value.
    /// </summary>
    public static string? InterruptNote(Func<string, string?>? environment = null)
    {
        environment ??= Environment.GetEnvironmentVariable;
        if (string.IsNullOrEmpty(environment("OMPI_COMM_WORLD_SIZE"))) return null;
        int timeout = IntFrom(environment, "OMPI_MCA_odls_base_sigkill_timeout") ?? 1;
        if (timeout >= SufficientKillTimeout) return null;
        return $"note: Ctrl-C on mpirun gives the ranks {timeout} s between SIGTERM and SIGKILL (odls_base_sigkill_timeout) to finish the step and save; " +
               $"start mpirun with --mca odls_base_sigkill_timeout 20 so the checkpoint is written (Ctrl-C then takes effect 20 s later)";
    }

    private static int? IntFrom(Func<string, string?> environment, params string[] names)
    {
        foreach (var name in names)
            if (int.TryParse(environment(name), out int value) && value >= 0) return value;
        return null;
    }
}
