"""Kill a demo run at random moments, restart it each time, and check it ends bit-identical.

    python -m benchmarks.kill_resume [--kills=5] [--sigterms=1] [--damage] [--seed=0] \\
        [--workdir=/tmp/blvnet_kill_resume] [--override=num_train_steps=60 ...]

First an uninterrupted run of `main.py --config=configs/demo.py` (with `--override`s, by default
a 60-step demo with a checkpoint every 10 steps). Then the same command again, stopped `--kills`
times and restarted after each stop: once with SIGKILL while a checkpoint is being written (an
Orbax temporary folder exists), otherwise when the run reaches a random step, `--sigterms` of
these with SIGTERM (a preemption notice: the run saves the step in flight and exits 0, and the
time from the signal to the exit is printed against a platform's ~30 s of grace), the others
with SIGKILL. After each stop it prints the step the run had reached, the complete checkpoints
on disk (each is restored to prove it readable; partial ones are Orbax temporaries, which a
restart ignores), and, from the restart's log, the step it resumed from: the work redone is the
steps since the last complete checkpoint (none after a SIGTERM). With `--damage` (the default),
before the last restart 20 bytes of the newest checkpoint's largest parameter file are flipped on
disk: the restart must name that step as damaged, set it aside and resume from the one before.
Finally the stopped run's parameters and batch-norm statistics are compared with the
uninterrupted run's, bit for bit. Ends with a JSON line of the figures.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS

_RESUMED = re.compile(r"Resumed from \S+ at step (\d+)")
_SET_ASIDE = re.compile(r"Checkpoint step (\d+) in \S+ is damaged \((.*)\): set aside as (\S+);")
_LOGGED_STEP = re.compile(r"\] \[(\d+)\] train/")  # clu's log line of a step's training metrics


def demo_command(workdir: str, overrides: list[str]) -> list[str]:
    """main.py on the demo config, logging every step (the kill moments are read from its log)."""
    return [sys.executable, "main.py", "--config=configs/demo.py", f"--workdir={workdir}",
            "--config.log_every_steps=1", "--alsologtostderr", *[f"--config.{o}" for o in overrides]]


class ReachedStep:
    """Called: the last step whose training metrics a run logged to `log_path` (0 when none), reading
    only the lines added since the last call. Not from metrics.jsonl, which a resumed run cuts back
    to the step it resumed from."""

    def __init__(self, log_path: str):
        self.log_path, self.offset, self.step = log_path, 0, 0

    def __call__(self) -> int:
        with open(self.log_path, "rb") as file:
            file.seek(self.offset)
            added = file.read()
        lines = added[:added.rfind(b"\n") + 1]
        self.offset += len(lines)
        self.step = max([self.step, *map(int, _LOGGED_STEP.findall(lines.decode(errors="replace")))])
        return self.step


def checkpoint_folders(workdir: str) -> tuple[list[int], list[str]]:
    """(complete checkpoint steps, names of partial ones: Orbax temporaries) under `{workdir}/checkpoints`."""
    directory = os.path.join(workdir, "checkpoints")
    names = os.listdir(directory) if os.path.isdir(directory) else []
    return (sorted(int(name) for name in names if name.isdigit()),
            sorted(name for name in names if "orbax-checkpoint-tmp" in name))


def damage_newest_checkpoint(workdir: str) -> int:
    """Flips 20 bytes of the largest parameter file of the newest complete checkpoint; returns its step."""
    step = checkpoint_folders(workdir)[0][-1]
    root = os.path.join(workdir, "checkpoints", str(step), "params")
    largest = max((os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names),
                  key=os.path.getsize)
    with open(largest, "r+b") as file:
        data = bytearray(file.read())
        for i in np.random.default_rng(0).choice(len(data), 20, replace=False):
            data[i] ^= 0xFF
        file.seek(0)
        file.write(data)
    return step


def set_aside(log_path: str) -> list[dict]:
    """The damaged steps a run set aside, from its log: `{'step', 'reason', 'as'}`."""
    with open(log_path) as file:
        found = _SET_ASIDE.findall(file.read())
    return [{"step": int(step), "reason": reason, "as": name} for step, reason, name in found]


def run_and_stop(command: list[str], env: dict, ready, log_path: str, stop_signal: int = signal.SIGKILL,
                 timeout: float = 900) -> dict | None:
    """Runs `command` (its output written to `log_path`) and sends it `stop_signal` once `ready()` holds.

    Returns `{'exit_code', 'exit_seconds'}` (seconds from the signal to the exit), or None when the
    run finished first."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while process.poll() is None and time.time() < deadline:
            if ready():
                process.send_signal(stop_signal)
                signalled = time.perf_counter()
                exit_code = process.wait()
                return {"exit_code": exit_code, "exit_seconds": time.perf_counter() - signalled}
            time.sleep(0.005)
        process.wait()
    return None


def run_to_end(command: list[str], env: dict, log_path: str) -> None:
    with open(log_path, "w") as log:
        finished = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=1800, check=False)
    if finished.returncode:
        raise RuntimeError(f"{' '.join(command)} failed with status {finished.returncode}; see {log_path}")


def resumed_step(log_path: str) -> int:
    """The step a run resumed from, read from its log (0: it started afresh)."""
    with open(log_path) as file:
        found = _RESUMED.search(file.read())
    return int(found.group(1)) if found else 0


def final_state(workdir: str, step: int | None = None) -> tuple[int, dict]:
    """(step, {path: numpy array} of parameters and batch-norm statistics) of a checkpoint, latest by default."""
    import jax
    from flax import nnx

    from blvnet_jax import checkpoint
    model, metadata = checkpoint.restore_model(workdir, step)
    leaves = jax.tree_util.tree_flatten_with_path(nnx.state(model).to_pure_dict())[0]
    return metadata["step"], {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def kill_moments(total_steps: int, kills: int, sigterms: int, rng: np.random.Generator) -> list[tuple]:
    """`(moment, signal name)` pairs: sorted random steps, `sigterms` of them for SIGTERM, and the
    string 'checkpoint' (SIGKILL) at a random place among them."""
    steps = sorted(rng.choice(np.arange(1, total_steps), kills - 1, replace=False).tolist())
    terminated = set(rng.choice(len(steps), min(sigterms, len(steps)), replace=False).tolist())
    moments = [(step, "SIGTERM" if i in terminated else "SIGKILL") for i, step in enumerate(steps)]
    moments.insert(int(rng.integers(0, kills)), ("checkpoint", "SIGKILL"))
    return moments


def killed_run(workdir: str, overrides: list[str], total_steps: int, kills: int, seed: int,
               sigterms: int = 1, damage: bool = True) -> list[dict]:
    """Stops and restarts the run `kills` times, then lets it finish; one dict of figures per stop.
    With `damage`, the newest checkpoint is damaged before the last restart (if an earlier one exists)."""
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    command = demo_command(workdir, overrides)
    figures = []
    for attempt, (moment, signal_name) in enumerate(
            kill_moments(total_steps, kills, sigterms, np.random.default_rng(seed))):
        log_path, old_partial = f"{workdir}.{attempt}.log", set(checkpoint_folders(workdir)[1])
        reached_step = ReachedStep(log_path)
        if moment == "checkpoint":
            ready = lambda old_partial=old_partial: bool(set(checkpoint_folders(workdir)[1]) - old_partial)
        else:
            ready = lambda moment=moment, reached_step=reached_step: reached_step() >= moment
        started = time.perf_counter()
        stopped = run_and_stop(command, env, ready, log_path, getattr(signal, signal_name))
        killed = stopped is not None
        complete, partial = checkpoint_folders(workdir)
        for step in complete:
            final_state(workdir, step)  # raises if a complete checkpoint does not restore
        figures.append({"moment": moment, "signal": signal_name, "killed": killed,
                        "seconds": time.perf_counter() - started, **(stopped or {}),
                        "reached_step": reached_step(), "complete_checkpoints": complete,
                        "partial_checkpoints": partial})
        if not killed:
            break
    if damage and figures[-1]["killed"] and len(figures[-1]["complete_checkpoints"]) > 1:
        figures[-1]["damaged_step"] = damage_newest_checkpoint(workdir)
    run_to_end(command, env, f"{workdir}.{len(figures)}.log")
    for attempt, kill in enumerate(figures):
        # An attempt killed before it logged a step reached the step it had resumed from.
        kill["reached_step"] = max(kill["reached_step"], resumed_step(f"{workdir}.{attempt}.log"))
        kill["resumed_from"] = resumed_step(f"{workdir}.{attempt + 1}.log")
        kill["set_aside"] = set_aside(f"{workdir}.{attempt + 1}.log")
        kill["redone_steps"] = kill["reached_step"] - kill["resumed_from"]
        kill["last_complete"] = max(kill["complete_checkpoints"], default=0)
    return figures


def main(argv):
    del argv
    shutil.rmtree(FLAGS.workdir, ignore_errors=True)
    os.makedirs(FLAGS.workdir)
    straight, killed = (os.path.join(FLAGS.workdir, name) for name in ("straight", "killed"))
    started = time.perf_counter()
    run_to_end(demo_command(straight, FLAGS.override), dict(os.environ, PYTHONPATH=os.getcwd()), straight + ".log")
    straight_seconds = time.perf_counter() - started
    total_steps, straight_state = final_state(straight)
    print(f"uninterrupted run: {total_steps} steps in {straight_seconds:.0f} s")
    figures = killed_run(killed, FLAGS.override, total_steps, FLAGS.kills, FLAGS.seed, FLAGS.sigterms, FLAGS.damage)
    for number, kill in enumerate(figures, start=1):
        moment = "while writing a checkpoint" if kill["moment"] == "checkpoint" else f"at step {kill['moment']}"
        exit_figures = (f", exit status {kill['exit_code']} {kill['exit_seconds']:.1f} s after the signal"
                        if kill["killed"] else " (the run ended first)")
        print(f"{kill['signal']} {number} {moment}{exit_figures}: reached step {kill['reached_step']}, "
              f"complete checkpoints {kill['complete_checkpoints']} (all restored), partial "
              f"{kill['partial_checkpoints'] or 'none'}; "
              f"restart resumed from step {kill['resumed_from']}, redoing {kill['redone_steps']} steps")
        if "damaged_step" in kill:
            named = ", ".join(f"step {d['step']} as {d['as']} ({d['reason']})" for d in kill["set_aside"]) or "NOTHING"
            print(f"  before that restart, 20 bytes of checkpoint {kill['damaged_step']} were flipped: the restart set "
                  f"aside {named}")
    final_step, killed_state = final_state(killed)
    mismatched = [name for name, array in straight_state.items() if not np.array_equal(array, killed_state[name])]
    identical = final_step == total_steps and not mismatched
    print(f"killed run ended at step {final_step}; parameters and batch statistics "
          f"{'bit-identical to' if identical else 'DIFFERENT from'} the uninterrupted run's"
          + (f" ({len(mismatched)} arrays differ, first {mismatched[0]})" if mismatched else ""))
    print(json.dumps({"total_steps": total_steps, "straight_seconds": straight_seconds, "kills": figures,
                      "bit_identical": identical}))
    sys.exit(0 if identical else 1)


if __name__ == "__main__":
    # Flags are defined only when run as a program, so importing this module (tests do) defines none.
    flags.DEFINE_integer("kills", 5, "How many times the run is stopped (one of them while a checkpoint is written).")
    flags.DEFINE_integer("sigterms", 1, "How many of the stops at a random step are SIGTERM (preemption) "
                         "rather than SIGKILL.")
    flags.DEFINE_integer("seed", 0, "Seed of the random kill moments.")
    flags.DEFINE_bool("damage", True, "Before the last restart, flip 20 bytes of the newest checkpoint on disk.")
    flags.DEFINE_string("workdir", "/tmp/blvnet_kill_resume", "Holds the two runs' workdirs (emptied first).")
    flags.DEFINE_multi_string("override", ["num_train_steps=60", "checkpoint_every_steps=10"],
                              "--config.<override> for both runs (the demo config otherwise).")
    app.run(main)
