"""How fast and how clearly `main.py` rejects configs that cannot work.

    python -m benchmarks.config_errors

Runs `main.py --config=configs/demo.py` once per impossible setting (each in a fresh process, 8
simulated CPU devices so that a batch can fail to divide), and prints the seconds until it
stopped and its last line, which must name the field. Nothing is built or compiled first.
"""
import os
import subprocess
import sys
import tempfile
import time

from absl import app

# (what is wrong, --config overrides, the field the message must name)
CASES = (
    ("odd frame count for bLVNet", ["model.num_frames=7"], "config.model.num_frames=7"),
    ("crop too small for the network", ["data.crop_size=16"], "config.data.crop_size=16"),
    ("even blending_frames", ["model.blending_frames=4"], "blending_frames=4"),
    ("batch not divisible by 8 devices", ["batch_size=12"], "config.batch_size=12"),
    ("unknown model name", ["model.name=i3d"], "config.model.name='i3d'"),
    ("missing list file", ["data.source=frames", "data.root=/tmp", "data.train_list=absent.txt"],
     "config.data.train_list='absent.txt'"),
    ("init_from another architecture", ["init_from=WORKDIR_OF_TSN"], "config.init_from"),
)


def tsn_checkpoint(workdir: str) -> None:
    """A TSN checkpoint of the demo's width, for the init_from case."""
    from flax import nnx  # noqa: PLC0415 - JAX only where the checkpoint is written.

    from blvnet_jax import checkpoint  # noqa: PLC0415
    from blvnet_jax.models import create_model  # noqa: PLC0415
    from configs import demo  # noqa: PLC0415
    config = demo.get_config()
    config.model.name = "tsn"
    checkpoint.save_model(workdir, 0, create_model(config.model, rngs=nnx.Rngs(0)), config)


def main(argv):
    del argv
    env = dict(os.environ, PYTHONPATH=os.getcwd(), XLA_FLAGS="--xla_force_host_platform_device_count=8")
    with tempfile.TemporaryDirectory() as scratch:
        tsn_workdir = os.path.join(scratch, "tsn")
        tsn_checkpoint(tsn_workdir)
        print(f"{'case':34s} {'seconds':>7s}  last line")
        for case, overrides, field in CASES:
            command = [sys.executable, "main.py", "--config=configs/demo.py", f"--workdir={scratch}/run"]
            command += [f"--config.{o.replace('WORKDIR_OF_TSN', tsn_workdir)}" for o in overrides]
            start = time.perf_counter()
            result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
            seconds = time.perf_counter() - start
            last_line = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
            verdict = "ok" if result.returncode and field in last_line else "NOT NAMED"
            print(f"{case:34s} {seconds:7.1f}  [{verdict}] {last_line}", flush=True)


if __name__ == "__main__":
    app.run(main)
