"""Process settings that make XLA:CPU fast here; call `configure()` before jax is imported.

Measured on a 2-core AVX-512 CPU (docs/performance.md):
- XLA:CPU hands every convolution and most dots to YNNPACK, whose weight-gradient kernels are
  2-5x slower than XLA's own (Eigen) path: the flag below turns those two fusion kinds off.
- glibc gives transparent huge pages only on request, so every step faults its big activation
  buffers in 4 KiB at a time. `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` is read when a process
  starts; `configure(huge_pages=True)` re-executes the current command once with it set.
Neither changes results. Nothing here imports jax; on a GPU run the flag is ignored by XLA:GPU.
`BLVNET_XLA_ENV=0` in the environment turns `configure()` off (to measure the defaults); a
tunable or flag already set by the user is kept as it is.
"""
import os
import sys

CPU_XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution,-individual_dot",)
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"


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


def configure(huge_pages: bool = True) -> None:
    """Sets XLA_FLAGS and, if asked and not yet in effect, restarts the process with huge pages.

    Must run before `import jax`. The restart (`os.execve` of `sys.orig_argv`, same command
    line) happens once: the restarted process finds the tunable set.
    """
    if os.environ.get("BLVNET_XLA_ENV") == "0":
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
