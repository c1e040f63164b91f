"""Kill -9 during training, restart, and end bit-identical to an uninterrupted run."""
import os
import signal
import subprocess
import time

import jax
import numpy as np

from test_train import final_params, main_command


def run_env(cache_dir):
    return dict(os.environ, PYTHONPATH=os.getcwd(), JAX_COMPILATION_CACHE_DIR=str(cache_dir))


def kill_when(command, env, ready, timeout=600):
    """Starts `command`, kills it with SIGKILL as soon as `ready()` holds; returns whether it did."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while process.poll() is None and time.time() < deadline:
        if ready():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.005)
    process.wait()
    return False


def test_kill_anywhere_and_resume_bit_identically(tmp_path):
    env = run_env(tmp_path / "cache")
    steps = ["--config.num_train_steps=8", "--config.checkpoint_every_steps=2"]
    straight = subprocess.run(main_command(tmp_path / "straight", tmp_path / "data", *steps), env=env,
                              capture_output=True, text=True, timeout=900)
    assert straight.returncode == 0, straight.stderr[-3000:]
    workdir = tmp_path / "killed"
    checkpoints = workdir / "checkpoints"
    command = main_command(workdir, tmp_path / "data", *steps)

    def writing():
        return checkpoints.exists() and any("tmp" in name for name in os.listdir(checkpoints))

    def finished(step):
        return lambda: (checkpoints / str(step)).exists()

    kills = [kill_when(command, env, writing), kill_when(command, env, finished(4)),
             kill_when(command, env, finished(6))]
    assert sum(kills) >= 2, "the runs ended before they could be killed"
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    step_a, params_a = final_params(tmp_path / "straight")
    step_b, params_b = final_params(workdir)
    assert step_a == step_b == 8
    jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
