"""Process settings that make XLA:CPU fast here; call `configure()` before jax is imported.

Measured on a 2-core AVX-512 CPU (docs/performance.md):
- XLA:CPU hands every convolution and most dots to YNNPACK, whose weight-gradient kernels are
  2-5x slower than XLA's own (Eigen) path: the flag below turns those two fusion kinds off.
- glibc gives transparent huge pages only on request, so every step faults its big activation
  buffers in 4 KiB at a time. `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` is read when a process
  starts; `configure(huge_pages=True)` re-executes the current command once with it set.
Neither changes results. Both apply only to a run on the CPU: `target_platform()` decides,
without importing jax, whether the run targets an accelerator, where `configure()` leaves the
environment as it is. `BLVNET_XLA_ENV=0` in the environment turns `configure()` off (to measure the
defaults); a tunable or flag already set by the user is kept as it is.
"""
import glob
import importlib.util
import os
import sys

CPU_XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution,-individual_dot",)
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
NVIDIA_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia[0-9]*")
CUDA_PLUGINS = ("jax_cuda13_plugin", "jax_cuda12_plugin")
TPU_DEVICE_FILES = ("/dev/accel[0-9]*", "/dev/vfio/[0-9]*")
TPU_LIBRARY = "libtpu"


def with_flags(existing: str, flags=CPU_XLA_FLAGS) -> str:
    """`existing` XLA_FLAGS plus each of `flags` whose name it does not already set."""
    names = {flag.split("=")[0] for flag in existing.split()}
    missing = [flag for flag in flags if flag.split("=")[0] not in names]
    return " ".join([existing.strip()] + missing).strip()


def with_tunable(existing: str, tunable: str = HUGE_PAGES_TUNABLE) -> str:
    """`existing` GLIBC_TUNABLES (colon-separated) with `tunable` added unless its name is set."""
    name = tunable.split("=")[0]
    items = [item for item in existing.split(":") if item]
    if any(item.split("=")[0] == name for item in items):
        return existing
    return ":".join(items + [tunable])


def device_files(patterns) -> list[str]:
    """The paths that match any of the glob `patterns`."""
    return [path for pattern in patterns for path in glob.glob(pattern)]


def importable(module: str) -> bool:
    """Whether `module` is installed, found without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def target_platform() -> tuple[str, str]:
    """`('cpu' | 'accelerator', reason)`: where jax will run this process, decided before it loads.

    JAX_PLATFORMS, when set, decides (a first platform other than cpu is an accelerator).
    Otherwise an accelerator is one that jax can use here: NVIDIA device files with a jax CUDA
    plugin installed, or TPU device files with libtpu installed. Installed libraries alone are not
    an accelerator: CPU hosts install libtpu to compile for TPUs.
    """
    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        first = platforms.split(",")[0].strip()
        return ("cpu" if first == "cpu" else "accelerator"), f"JAX_PLATFORMS={platforms}"
    nvidia = device_files(NVIDIA_DEVICE_FILES)
    cuda_plugins = [plugin for plugin in CUDA_PLUGINS if importable(plugin)]
    if nvidia and cuda_plugins:
        return "accelerator", f"{nvidia[0]} and {cuda_plugins[0]}"
    tpus = device_files(TPU_DEVICE_FILES)
    if tpus and importable(TPU_LIBRARY):
        return "accelerator", f"{tpus[0]} and {TPU_LIBRARY}"
    return "cpu", "JAX_PLATFORMS unset and no GPU or TPU that jax can use"


def configure(huge_pages: bool = True) -> None:
    """On a CPU run, sets XLA_FLAGS and, if asked and not yet in effect, restarts the process with
    huge pages; on an accelerator (`target_platform()`) does nothing.

    Must run before `import jax`. The restart (`os.execve` of `sys.orig_argv`, same command
    line) happens once: the restarted process finds the tunable set.
    """
    if os.environ.get("BLVNET_XLA_ENV") == "0" or target_platform()[0] != "cpu":
        return
    xla_flags, tunables = os.environ.get("XLA_FLAGS", ""), os.environ.get("GLIBC_TUNABLES", "")
    wanted_flags, wanted_tunables = with_flags(xla_flags), with_tunable(tunables)
    restart = huge_pages and wanted_tunables != tunables
    if wanted_flags == xla_flags and not restart:
        return
    if "jax" in sys.modules:
        raise RuntimeError("xla_env.configure() must run before jax is imported")
    os.environ["XLA_FLAGS"] = wanted_flags
    if restart:
        os.environ["GLIBC_TUNABLES"] = wanted_tunables
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, sys.orig_argv, os.environ)
