"""Test-session settings, set in the environment so the tests' subprocesses share them: compiled
programs are cached on disk so repeated shapes compile once (also across the `main.py` runs of a
test), jax runs on the CPU (libtpu, installed for the TPU compile tests, would otherwise try to
open a TPU in every process), and XLA:CPU compiles without its backend optimisations."""
import os
import tempfile

import pytest

from blvnet_jax import xla_env

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="blvnet_jax_test_cache_"))
# Every program, however quick to compile: a model's eager initialisation compiles about 80 small
# ones (13 s for the tiny test model on this CPU, 2 s read from the cache).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# libtpu (tests/test_compile.py) takes a machine-wide lock file when it loads; other jax processes
# (the tests' subprocesses, other runs) must not make it fail.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
# The tests compile far more than they compute: LLVM at -O0 compiles 1.5-2.5x faster (the tiny model's
# eager initialisation 26 s -> 10 s, its train step 16 s -> 10 s; the parity tests 60 s -> 41 s) and
# runs its programs to the same tolerances. Subprocesses add their own flags to these.
os.environ["XLA_FLAGS"] = xla_env.with_flags(os.environ.get("XLA_FLAGS", ""), ("--xla_backend_optimization_level=0",))


@pytest.fixture(scope="session")
def straight_run(tmp_path_factory):
    """`test_train.tiny_config` trained without interruption (checkpoints at steps 2 and 4, evaluated
    at 4): (data root, workdir). Tests that change the workdir copy it first."""
    from blvnet_jax import train
    from test_train import tiny_config
    root = tmp_path_factory.mktemp("straight")
    train.train_and_evaluate(tiny_config(root / "data"), str(root / "run"))
    return root / "data", root / "run"
