"""Several processes as on a pod: jax.distributed on localhost with CPU collectives.

Each test starts real processes; the mesh of the evaluation test interleaves the processes'
devices along the data axis, as `jax.make_mesh` does on multi-host TPU slices.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from input_pipeline import sources
from test_integrity import flip_bytes, largest_file
from test_train import environment, final_params, main_command, tiny_config

EVALUATE = """
import json, os, sys
import jax, numpy as np
args = json.loads(sys.argv[1])
if args["processes"] > 1:
    jax.distributed.initialize(f"localhost:{args['port']}", args["processes"], args["process_id"])
from flax import nnx
import input_pipeline
from blvnet_jax import evaluation
from blvnet_jax.models import create_model
from blvnet_jax.sharding import replicated
from test_multihost import views_config
config = views_config(args["data"])
by_process = [[d for d in jax.devices() if d.process_index == p] for p in range(jax.process_count())]
interleaved = [device for group in zip(*by_process) for device in group]
mesh = jax.sharding.Mesh(np.array(interleaved).reshape(-1, 1), ("data", "frames"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
graphdef, params, batch_stats = nnx.split(create_model(config.model, rngs=nnx.Rngs(0)), nnx.Param, nnx.BatchStat)
params, batch_stats = jax.device_put((params, batch_stats), replicated(mesh))
evaluator = evaluation.Evaluator(config, graphdef, mesh, input_pipeline.create_source(config.data), None)
os.makedirs(args["workdir"], exist_ok=True)
results = evaluator.evaluate(params, batch_stats, 0, args["workdir"])
predictions = evaluator.predict(params, batch_stats)
if jax.process_index() == 0:
    np.savez(args["output"], mesh_processes=[d.process_index for d in mesh.devices.flat], **predictions)
"""


def views_config(data_root):
    """Two views per video, three videos per host and batch: a video's views straddle two devices."""
    config = tiny_config(data_root, eval_batch_size=6)
    config.data.update(dict(num_crops=1, num_clips=2))
    config.data.synthetic.val_videos_per_class = 5
    return config


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def run_processes(commands: list[list[str]], env: dict, timeout: int = 900) -> list[subprocess.CompletedProcess]:
    """Starts every command at once and waits for all of them."""
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for command in commands]
    finished = []
    for command, process in zip(commands, processes):
        stdout, stderr = process.communicate(timeout=timeout)
        finished.append(subprocess.CompletedProcess(command, process.returncode, stdout, stderr))
    return finished


def evaluate_with(processes: int, devices_per_process: int, tmp_path, name: str) -> dict:
    port = free_port()
    commands = [[sys.executable, "-c", EVALUATE, json.dumps(dict(
        processes=processes, process_id=i, port=port, data=str(tmp_path / "data"),
        workdir=str(tmp_path / name), output=str(tmp_path / f"{name}.npz")))] for i in range(processes)]
    for result in run_processes(commands, environment(devices_per_process)):
        assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / name / "eval" / "step_0_1x2" / "results.json") as f:
        return dict(np.load(tmp_path / f"{name}.npz"), results=json.load(f))


def test_interleaved_devices_score_every_video_with_its_own_label(tmp_path):
    """2 processes x 2 devices, mesh order p0 p1 p0 p1, give the one-process results exactly."""
    one = evaluate_with(1, 4, tmp_path, "one")
    two = evaluate_with(2, 2, tmp_path, "two")
    assert list(one["mesh_processes"]) == [0, 0, 0, 0] and list(two["mesh_processes"]) == [0, 1, 0, 1]
    np.testing.assert_array_equal(one["video_index"], np.arange(10))
    np.testing.assert_array_equal(two["video_index"], one["video_index"])
    np.testing.assert_array_equal(two["labels"], one["labels"])
    entries, _ = sources.read_video_list(sources.create_source(views_config(tmp_path / "data").data).config.val_list)
    np.testing.assert_array_equal(one["labels"], [entry.label for entry in entries])
    np.testing.assert_allclose(two["probabilities"], one["probabilities"], rtol=1e-6)
    assert two["results"] == one["results"] and one["results"]["num_videos"] == 10


def test_a_workdir_not_shared_by_the_hosts_is_refused_naming_them(tmp_path, data_root):
    """Each process gets its own directory, as a workdir on each host's local disk would be."""
    port = free_port()
    results = run_processes([main_command(tmp_path / f"host{i}", data_root,
                                          f"--coordinator_address=localhost:{port}", "--num_processes=2",
                                          f"--process_id={i}") for i in range(2)], environment(1), timeout=600)
    expected = (f"Workdir error (--workdir={tmp_path / 'host0'}): the workdir {tmp_path / 'host0'} is not shared "
                f"by all hosts: process 1 on {socket.gethostname()} cannot see the file process 0 wrote there.")
    assert results[0].returncode == 1
    assert any(line.startswith(expected) for line in results[0].stderr.splitlines()), results[0].stderr[-2000:]
    assert results[1].returncode == 1 and "is not shared by all hosts: process 1 on" in results[1].stderr
    assert "Traceback" not in results[0].stderr + results[1].stderr
    assert not os.path.exists(tmp_path / "host0" / "checkpoints" / "1")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """The tiny synthetic dataset, generated once before any process reads it."""
    root = tmp_path_factory.mktemp("pod") / "data"
    sources.create_source(tiny_config(root).data)
    return root


POD_STEPS = 16


def pod_command(workdir, data_root, *distributed_flags):
    """main.py training `POD_STEPS` steps, logging each, one checkpoint at the end."""
    return main_command(workdir, data_root, f"--config.num_train_steps={POD_STEPS}", "--config.eval_every_steps=1000",
                        f"--config.checkpoint_every_steps={POD_STEPS}", "--config.log_every_steps=1",
                        "--alsologtostderr", *distributed_flags)


def process_flags(process_id, port):
    return [f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={process_id}"]


def train_two_processes(workdir, data_root):
    port = free_port()
    for result in run_processes([pod_command(workdir, data_root, *process_flags(i, port)) for i in range(2)],
                                environment(1)):
        assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, data_root):
    """The workdir of an uninterrupted `POD_STEPS`-step training by 2 processes."""
    workdir = tmp_path_factory.mktemp("two_processes") / "run"
    train_two_processes(workdir, data_root)
    return workdir


def test_two_processes_match_one(tmp_path, data_root, two_process_run):
    """Each of 2 processes feeds half of every batch: the losses of one process feeding all. The
    first steps are compared: later ones drift apart with the float sums' other order (2% of some
    parameters after 16 steps)."""
    single = subprocess.run(pod_command(tmp_path / "one", data_root), env=environment(1), capture_output=True,
                            text=True, timeout=900)
    assert single.returncode == 0, single.stderr[-3000:]
    one, two = (train_losses(workdir) for workdir in (tmp_path / "one", two_process_run))
    assert sorted(one) == sorted(two) == list(range(1, POD_STEPS + 1))
    np.testing.assert_allclose([two[step] for step in (1, 2, 3, 4)], [one[step] for step in (1, 2, 3, 4)],
                               rtol=1e-4)
    results = [workdir / "eval" / f"step_{POD_STEPS}_1x1" / "results.json" for workdir in (tmp_path / "one",
                                                                                          two_process_run)]
    with open(results[0]) as f, open(results[1]) as g:
        assert json.load(f)["num_videos"] == json.load(g)["num_videos"] == 4


def train_losses(workdir) -> dict[int, float]:
    """`{step: train/loss}` from `metrics.jsonl`."""
    with open(workdir / "metrics.jsonl") as f:
        return {line["step"]: line["train/loss"] for line in map(json.loads, f) if "train/loss" in line}


def test_sigterm_on_one_host_stops_both_at_one_checkpoint_and_the_restart_ends_exactly(tmp_path, data_root,
                                                                                       two_process_run):
    port = free_port()
    with open(tmp_path / "process0.log", "w") as log0:
        processes = [subprocess.Popen(pod_command(tmp_path / "preempted", data_root, *process_flags(i, port)),
                                      env=environment(1),
                                      stdout=subprocess.DEVNULL, stderr=log0 if i == 0 else subprocess.PIPE,
                                      text=True) for i in range(2)]
        logged_steps = 0
        for line in processes[1].stderr:  # process 1 logs every step; preempt it, and only it, at its third
            logged_steps += "train/loss=" in line
            if logged_steps == 3:
                processes[1].send_signal(signal.SIGTERM)
                break
        stderr = [None, processes[1].communicate(timeout=600)[1]]
        processes[0].wait(timeout=600)
    stderr[0] = (tmp_path / "process0.log").read_text()
    assert [p.returncode for p in processes] == [0, 0], stderr[0][-3000:] + stderr[1][-3000:]
    stopped = [int(text.split("Stopped (preempted, or Ctrl-C) at step ")[1].split()[0]) for text in stderr]
    assert stopped[0] == stopped[1] < POD_STEPS
    checkpoints = sorted(int(name) for name in os.listdir(tmp_path / "preempted" / "checkpoints") if name.isdigit())
    assert checkpoints == [stopped[0]]

    newer = tmp_path / "preempted" / "checkpoints" / str(stopped[0] + 1)  # a newer step, damaged on disk: both
    shutil.copytree(newer.parent / str(stopped[0]), newer)                # processes must set it aside together
    flip_bytes(largest_file(newer / "params"))
    train_two_processes(tmp_path / "preempted", data_root)
    assert (newer.parent / f"{stopped[0] + 1}.damaged").is_dir()
    step_straight, straight = final_params(two_process_run)
    step_resumed, resumed = final_params(tmp_path / "preempted")
    assert step_straight == step_resumed == POD_STEPS
    jax.tree.map(np.testing.assert_array_equal, straight, resumed)


def assert_every_host_stopped(results, kind: str, own_error: str, message: str) -> None:
    """Both processes failed with a `kind` error ('Data error', 'Config error') holding `message` in its first line:
    process 1 with its own, which starts with `own_error`, process 0 naming process 1."""
    for process, result in enumerate(results):
        assert result.returncode != 0, result.stderr[-3000:]
        error = result.stderr[result.stderr.rindex(f"{kind} ("):]
        assert error.startswith(f"{kind} (configs/demo.py with its --config.* overrides): " +
                                ("process 1 on " if process == 0 else own_error)), error
        assert message in error.splitlines()[0], error
        assert "Traceback" not in error


def test_a_data_error_on_one_host_stops_every_host_with_its_message(tmp_path, data_root):
    """Strict data, and the folder of a video that only process 1 reads at step 1 is gone: both processes stop
    there with process 1's error (process 0 naming process 1) and save no checkpoint (before, process 1
    raised alone and process 0 waited in the step's collectives past the test's timeout)."""
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    config = tiny_config(root)
    videos = sources.create_source(config.data).videos("train")
    order = sources.TrainOrder(len(videos.labels), config.seed)
    local_batch = config.batch_size // 2
    process_1_videos = {int(order.candidates(slot, 1)[0]) for slot in range(local_batch, 2 * local_batch)}
    video = min(process_1_videos)
    shutil.rmtree(root / videos.ids[video])
    port = free_port()
    results = run_processes([pod_command(tmp_path / "run", root, *process_flags(i, port), "--config.data.strict=True")
                             for i in range(2)], environment(1), timeout=300)
    assert_every_host_stopped(results, "Data error", f"{root}/train.txt:", f"video {videos.ids[video]!r}: empty video")
    assert not [name for name in os.listdir(tmp_path / "run" / "checkpoints") if name.isdigit()]


def test_a_data_error_in_evaluation_on_one_host_stops_every_host(tmp_path, data_root, two_process_run):
    """--mode=eval on strict data whose validation video 1 (process 1 evaluates videos 1, 3) lost its folder:
    both processes stop at the end of the evaluation, and no result is written."""
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    videos = sources.create_source(tiny_config(root).data).videos("val")
    shutil.rmtree(root / videos.ids[1])
    port = free_port()
    results = run_processes([pod_command(two_process_run, root, *process_flags(i, port), "--config.data.strict=True",
                                         "--mode=eval") for i in range(2)], environment(1), timeout=300)
    assert_every_host_stopped(results, "Data error", f"{root}/val.txt:2 video ",
                              f"video {videos.ids[1]!r}: empty video")
    assert sorted(os.listdir(two_process_run / "eval")) == ["results.jsonl", f"step_{POD_STEPS}_1x1"]


FRAMES = ["--config.data.source=frames", "--config.data.train_list=train.txt", "--config.data.val_list=val.txt",
          "--config.data.class_names_file=classes.txt"]


def test_data_missing_on_one_host_stops_every_host_before_training(tmp_path, data_root):
    """Process 1's copy of the data is not where the config says: both processes stop at the config check,
    process 0 naming process 1 and its error (before, process 0 died in its first collective with a
    traceback)."""
    port = free_port()
    roots = [data_root, tmp_path / "not_copied_here"]
    results = run_processes([pod_command(tmp_path / "run", roots[i], *process_flags(i, port), *FRAMES)
                             for i in range(2)], environment(1), timeout=300)
    assert_every_host_stopped(results, "Config error", "config.data.root=",
                              f"config.data.root={str(roots[1])!r}: {roots[1]} does not exist")
    assert not (tmp_path / "run").exists()


def test_check_data_on_every_host_stops_them_all_when_one_finds_a_problem(tmp_path, data_root):
    """--check_data: process 1's copy of the data has a corrupt frame, process 0's has none."""
    damaged = shutil.copytree(data_root, tmp_path / "damaged")
    frame = damaged / "frames" / "val" / "00_0000" / "00002.jpg"
    frame.write_bytes(b"not a jpeg")
    port = free_port()
    results = run_processes([pod_command(tmp_path / "run", [data_root, damaged][i], *process_flags(i, port), *FRAMES,
                                         "--check_data") for i in range(2)], environment(1), timeout=300)
    for process, result in enumerate(results):
        assert result.returncode != 0, result.stderr[-3000:]
        assert f"corrupt frame {frame}" in result.stderr, result.stderr[-3000:]
        assert ("process 1 on " in result.stderr) == (process == 0)
    assert not (tmp_path / "run").exists()


def test_result_files_go_to_a_url_workdir_through_epath(tmp_path, monkeypatch):
    """`gs://` paths stay URLs (never `<cwd>/gs:/...`); the evaluation files are written through
    epath, here redirected from the bucket to a local folder."""
    from etils import epath
    from etils.epath import gpath
    from etils.epath import testing as epath_testing
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)  # else epath bypasses its mock for gs://

    from blvnet_jax import checkpoint, evaluation
    assert str(checkpoint.checkpoint_dir("gs://bucket/run")) == "gs://bucket/run/checkpoints"
    local = lambda path: os.fspath(path).replace("gs://", f"{tmp_path}/", 1)
    opened = []

    def open_locally(original, path, *args, **kwargs):
        opened.append(os.fspath(path))
        return original(local(path), *args, **kwargs)

    locally = lambda original, path, *args, **kwargs: original(local(path), *args, **kwargs)
    predictions = {"probabilities": np.array([[0.9, 0.1], [0.2, 0.8]]), "labels": np.array([0, 0]),
                   "video_index": np.array([0, 1])}
    results = dict(model="tsn", step=3, crops=1, clips=1, top1=0.5, top5=1.0, loss=0.9, num_videos=2)
    os.makedirs(tmp_path / "bucket" / "run")
    with epath_testing.mock_epath(open=open_locally, exists=locally, makedirs=locally, mkdir=locally):
        evaluation.write_results(epath.Path("gs://bucket/run"), results, predictions, ["a", "b"])
    names = ("step_3_1x1/results.json", "step_3_1x1/predictions.csv", "step_3_1x1/per_class.csv",
             "step_3_1x1/confusion.png", "results.jsonl")
    assert sorted(opened) == sorted(f"gs://bucket/run/eval/{name}" for name in names)
    with open(tmp_path / "bucket" / "run" / "eval" / "step_3_1x1" / "per_class.csv") as f:
        assert f.read().splitlines() == ["class,videos,top1", "a,2,0.5000", "b,0,"]
