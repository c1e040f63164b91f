"""The README's "Your own videos" walk-through, run as written on tiny generated videos.

    python -m benchmarks.own_videos [--workdir=/tmp/blvnet_own_videos] [--steps=2]

Writes 3 classes x 4 short mp4 videos per split into `WORKDIR/my_videos/{train,validation}/<class>/`
(class names with spaces), then runs the commands of the README's first shell block under "Your
own videos", in order, from the repository root: the paths they name (`my_videos/...`,
`data/...`, `runs/...`) moved under WORKDIR, `N` = 3, and a tiny model and budget added to each
`main.py` command (width 8, 4 frames, 32-pixel crops, `--steps` training steps). Its convert step
needs an official `.pth`: in its place a weights-only workdir of an 8-class model of that shape is
written with `checkpoint.save_model`, as convert writes one, so `init_from` re-initialises the head.
Last, a workdir "converted" with the training command's own config is trained in directly: that
must be refused in one line naming `--config.init_from`. Prints each command with its wall time
and exit status, and a table; exits with status 1 if any is not as expected. About 3 minutes on
2 cores, most of it starting processes and compiling.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import av
import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("moving left", "moving right", "standing still")
VIDEOS_PER_CLASS = 4
SECTION = "## Your own videos"
# Paths in the README's commands that are the reader's: moved under the work folder.
READER_PATHS = re.compile(r"^(my_videos|data/|runs/)")
TINY = ["--config.model.width=8", "--config.model.num_frames=4", "--config.data.crop_size=32",
        "--config.batch_size=4", "--config.eval_batch_size=4", "--config.warmup_epochs=0",
        "--config.log_every_steps=1"]
# What blvnet_jax.convert writes, without an official .pth: a weights-only workdir (argv[1]) of the
# model of `--config=... --config.*` (argv[2:]), parsed as main.py parses them.
STAND_IN = """
import sys
from absl import flags
from flax import nnx
from ml_collections import config_flags
from blvnet_jax import checkpoint
from blvnet_jax.models import create_model
config_flags.DEFINE_config_file("config", lock_config=True)
flags.FLAGS(["stand_in", *sys.argv[2:]])
config = flags.FLAGS.config
print("wrote", checkpoint.save_model(sys.argv[1], 0, create_model(config.model, rngs=nnx.Rngs(config.seed)), config))
"""


def write_mp4(path: str, frames: np.ndarray, fps: int = 12) -> None:
    """uint8 `(frames, height, width, 3)` as an MPEG-4 file with PyAV, as
    `input_pipeline.video_files.write_video` (whose package would start TensorFlow here)."""
    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_videos(root: str, seed: int = 0) -> None:
    """`root/{train,validation}/<class>/<k>.mp4`: a bright square moving left, moving right or standing
    still on noise, 12 frames of 64x48 at 12 fps."""
    rng = np.random.default_rng(seed)
    for split in ("train", "validation"):
        for label, name in enumerate(CLASSES):
            os.makedirs(os.path.join(root, split, name))
            for k in range(VIDEOS_PER_CLASS):
                frames = rng.integers(0, 60, (12, 48, 64, 3), dtype=np.uint8)
                start, y = int(rng.integers(8, 40)), int(rng.integers(4, 28))
                for t, frame in enumerate(frames):
                    x = start + (-2 * t if label == 0 else 2 * t if label == 1 else 0)
                    frame[y:y + 16, max(x, 0):max(x + 16, 0)] = 255
                write_mp4(os.path.join(root, split, name, f"{k}.mp4"), frames)


def readme_commands(readme: str) -> list[list[str]]:
    """The commands (argument lists) of the first shell block after the SECTION heading."""
    with open(readme) as f:
        text = f.read()
    section = text[text.index(SECTION):]
    block = re.search(r"^```bash\n(.*?)^```", section, re.S | re.M)[1]
    lines = block.replace("\\\n", " ").splitlines()
    return [words for line in lines if (words := shlex.split(line, comments=True))]


def localised(command: list[str], workdir: str, num_classes: int) -> list[str]:
    """`command` with the reader's paths under `workdir`, N = `num_classes`, our interpreter and,
    for `main.py`, the tiny model and budget."""
    out = [sys.executable if re.fullmatch(r"(\S*/)?python3?", command[0]) else command[0]]
    for arg in command[1:]:
        name, equals, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        if READER_PATHS.match(value):
            value = os.path.join(workdir, value)
        if name == "--config.model.num_classes" and value == "N":
            value = str(num_classes)
        out.append(name + equals + value)
    if out[1] == "main.py":
        out += TINY + [f"--config.num_train_steps={FLAGS.steps}", f"--config.checkpoint_every_steps={FLAGS.steps}"]
    return out


def run(command: list[str], shown: str = "") -> tuple[int, float, str]:
    """Runs `command` from the repository root; prints it (or `shown`), its exit status and wall time."""
    print(f"$ {shown or shlex.join(command)}", flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - start
    print(f"  exit {result.returncode} after {seconds:.1f} s", flush=True)
    return result.returncode, seconds, result.stdout + result.stderr


def stand_in(output: str, config_args: list[str]) -> tuple[int, float, str]:
    """Writes the weights-only workdir `output` of the model of `config_args`, as convert would."""
    return run([sys.executable, "-c", STAND_IN, output, *config_args],
               f"(in place of blvnet_jax.convert) weights-only {output} from {' '.join(config_args)}")


def tail(text: str, lines: int) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


def report(command: list[str], output: str) -> None:
    """The lines of a finished command that show it did its work."""
    if command[1:3] == ["-m", "blvnet_jax.predict"]:
        csv_path = next(a.split("=", 1)[1] for a in command if a.startswith("--output_csv="))
        with open(csv_path) as f:
            print(tail(f.read(), 3))
    else:
        print(tail("\n".join(line for line in output.splitlines()
                             if re.search(r"^wrote|Initialised from|Evaluation of step|prepared in", line)), 3))


def main(argv):
    del argv
    workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="blvnet_own_videos_")
    if FLAGS.workdir and os.path.exists(workdir):
        shutil.rmtree(workdir)
    os.makedirs(workdir, exist_ok=True)
    start = time.perf_counter()
    write_videos(os.path.join(workdir, "my_videos"))
    print(f"Wrote {2 * len(CLASSES) * VIDEOS_PER_CLASS} videos ({len(CLASSES)} classes x {VIDEOS_PER_CLASS} per "
          f"split) under {workdir}/my_videos\n", flush=True)
    results = []  # (what, exit status, seconds, as expected)
    train_command = None
    for command in map(lambda c: localised(c, workdir, len(CLASSES)), readme_commands(os.path.join(REPO, "README.md"))):
        what = " ".join(command[1:3])
        if command[1:3] == ["-m", "blvnet_jax.convert"]:
            # An 8-class model of the tiny shape: init_from must re-initialise the head for 3 classes.
            shape = ["--config=configs/own_videos.py", "--config.model.num_classes=8"] + TINY[:3]
            status, seconds, output = stand_in(command[command.index("--output") + 1], shape)
            what = "stand-in for " + what
        else:
            status, seconds, output = run(command)
        if status:
            print(tail(output, 15))
        else:
            report(command, output)
        if command[1] == "main.py" and "--mode=eval" not in command:
            train_command = command
        results.append((what, status, seconds, status == 0))
    # Training in a converted workdir itself, with the config it was converted with: refused in one line.
    converted = os.path.join(workdir, "runs", "converted")
    config_args = [a for a in train_command[2:] if not a.startswith(("--workdir=", "--config.init_from="))]
    config_args.append("--config.init_from=")
    stand_in(converted, config_args)
    status, seconds, output = run([sys.executable, "main.py", f"--workdir={converted}", *config_args])
    last = output.strip().splitlines()[-1]
    print(f"  {last}")
    refused = status == 1 and "Traceback" not in output and last.endswith(f"--config.init_from={converted}")
    results.append(("main.py in a converted workdir (must be refused)", status, seconds, refused))
    print("\n| command | exit | seconds | as expected |\n|---|---|---|---|")
    for what, status, seconds, ok in results:
        print(f"| {what} | {status} | {seconds:.1f} | {'yes' if ok else 'NO'} |")
    failed = sum(not ok for *_, ok in results)
    print(f"\n{len(results)} commands in {time.perf_counter() - start:.0f} s; {failed} not as expected.")
    if not FLAGS.workdir:
        shutil.rmtree(workdir)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    # Flags are defined only when run as a program, so importing this module defines none.
    flags.DEFINE_string("workdir", "", "Folder for the videos, shards and runs ('' = a new temporary folder, "
                        "removed at the end); an existing one is emptied first.")
    flags.DEFINE_integer("steps", 2, "Training steps of the fine-tuning command.")
    app.run(main)
