"""A user's mistake on the command line ends the program with status 1 and one line saying what was
wrong and what to do, before anything is compiled, and leaves the workdir as it was."""
import hashlib
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from blvnet_jax import checkpoint
from blvnet_jax.models import create_model
from test_train import main_command, tiny_config

ENV = dict(os.environ, PYTHONPATH=os.getcwd())


def run(*command):
    return subprocess.run([sys.executable, *command], env=ENV, capture_output=True, text=True, timeout=300)


def one_line_error(result) -> str:
    """The last line of stderr, after checking that the program failed without a traceback."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return result.stderr.strip().splitlines()[-1]


def files_of(workdir) -> dict[str, str]:
    """`{path relative to workdir: SHA-256 of its bytes}` of every file under `workdir`."""
    return {str(path.relative_to(workdir)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in pathlib.Path(workdir).rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """`(data root, workdir)`: the workdir's checkpoint holds the model and config that `main_command`
    trains, at step 3, as training stores them (the optimizer state left out: no error path reads it)."""
    root = tmp_path_factory.mktemp("trained")
    config = tiny_config(root / "data", num_train_steps=3, checkpoint_every_steps=3)
    graphdef, shapes = nnx.split(nnx.eval_shape(lambda: create_model(config.model, rngs=nnx.Rngs(0))))
    model = nnx.merge(graphdef, jax.tree.map(lambda x: np.ones(x.shape, x.dtype), shapes))  # no compile
    checkpoint.save_model(str(root / "run"), 3, model, config)
    return root / "data", root / "run"


@pytest.mark.parametrize("override, message", [
    ("--config.model.nme=tsn", "config.model has no field 'nme'; did you mean 'name'?"),
    ("--config.modl.name=tsn", "config has no field 'modl'; did you mean 'model'?"),
    ("--config.model.name.x=1",
     "config.model.name is a str ('blvnet_tam'), not a group of fields: it has no field 'x'"),
])
def test_a_misspelt_override_names_the_field_and_the_closest_one(tmp_path, override, message):
    result = run("main.py", "--config=configs/demo.py", f"--workdir={tmp_path / 'run'}", override)
    assert one_line_error(result) == f"Config error: {override}: {message}"
    assert result.stderr.strip().count("\n") == 0 and not (tmp_path / "run").exists()


@pytest.mark.parametrize("program", [["-m", "blvnet_jax.convert", "--checkpoint=x.pth", "--output=out"],
                                     ["-m", "input_pipeline.check_data"]])
def test_the_other_programs_taking_a_config_say_the_same(program):
    result = run(*program, "--config=configs/demo.py", "--config.data.crop_sise=64")
    assert one_line_error(result) == ("Config error: --config.data.crop_sise=64: config.data has no field "
                                      "'crop_sise'; did you mean 'crop_size'?")


def test_check_data_names_a_split_it_cannot_read_in_one_line(tmp_path):
    result = run("-m", "input_pipeline.check_data", "--config=configs/demo.py", "--config.data.source=frames",
                 f"--config.data.root={tmp_path}", "--config.data.train_list=absent.txt", "--split=train")
    assert one_line_error(result) == (f"check_data error: List file '{tmp_path}/absent.txt' does not exist; set "
                                      "config.data.train_list / val_list (relative paths are taken under "
                                      "config.data.root).")


def test_a_missing_config_file_is_named_with_the_closest_file(tmp_path):
    result = run("main.py", "--config=configs/dmo.py", f"--workdir={tmp_path}", "--config.model.name=tsn")
    assert one_line_error(result) == ("Config error: --config=configs/dmo.py: no such file; did you mean "
                                      "configs/demo.py?")


def test_a_value_of_the_wrong_type_names_the_type(tmp_path):
    result = run("main.py", "--config=configs/demo.py", f"--workdir={tmp_path}", "--config.model.num_frames=abc")
    assert one_line_error(result) == (
        "Flag error: --config.model.num_frames=abc: config.model.num_frames is of type int (invalid literal for int() "
        "with base 10: 'abc') (--helpfull lists the flags)")
    assert result.stderr.strip().count("\n") == 0
    unknown = run("main.py", "--config=configs/demo.py", f"--workdir={tmp_path}", "--mdoe=eval")
    assert one_line_error(unknown).startswith("Flag error: Unknown command line flag 'mdoe'")


@pytest.mark.parametrize("overrides, stored, given", [
    (["--config.model.name=tsn"], 'model.name="blvnet_tam"', 'model.name="tsn"'),
    (["--config.model.num_frames=8"], "model.num_frames=4", "model.num_frames=8"),
    (["--config.model.num_classes=3", "--config.data.synthetic.num_classes=3"], "model.num_classes=2",
     "model.num_classes=3"),
])
def test_evaluating_a_workdir_of_another_model_names_both_and_changes_nothing(workdir, overrides, stored, given):
    data_root, run_dir = workdir
    before = files_of(run_dir)
    result = run(*main_command(run_dir, data_root, "--mode=eval", *overrides)[1:])
    assert one_line_error(result) == (
        f"Config error (configs/demo.py with its --config.* overrides): the checkpoint of step 3 in "
        f"{run_dir / 'checkpoints'} holds {stored} but this config has {given}: evaluate it with the config it was "
        "trained with, or give the --workdir of a model of this config")
    assert files_of(run_dir) == before


@pytest.mark.parametrize("overrides", [[], ["--config.model.num_frames=8"]])  # its config, or another
def test_training_in_a_workdir_of_weights_only_points_to_init_from_and_changes_nothing(workdir, overrides):
    data_root, run_dir = workdir  # save_model's checkpoint: a converted model, no optimizer state
    before = files_of(run_dir)
    result = run(*main_command(run_dir, data_root, *overrides)[1:])
    assert one_line_error(result) == (
        f"Workdir error (--workdir={run_dir}): step 3 in {run_dir / 'checkpoints'} holds a model's weights only "
        "(written by convert or save_model), not a training run to resume: to fine-tune from it, train in a new "
        f"--workdir with --config.init_from={run_dir}")
    assert files_of(run_dir) == before


def test_eval_predict_and_export_create_nothing_in_a_workdir_without_checkpoints(tmp_path):
    typo = tmp_path / "no_such_run"
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "00001.jpg").write_bytes(b"")  # a frame folder, never decoded here
    expected = f"Workdir error (--workdir={typo}): no checkpoint under {typo / 'checkpoints'}"
    commands = [main_command(typo, tmp_path / "data", "--mode=eval")[1:],
                ["-m", "blvnet_jax.predict", f"--workdir={typo}", f"--video={tmp_path / 'frames'}"],
                ["-m", "blvnet_jax.export", f"--workdir={typo}", f"--output={tmp_path / 'exported'}"]]
    for command in commands:
        assert one_line_error(run(*command)).startswith(expected)
    assert sorted(os.listdir(tmp_path)) == ["frames"]


def test_predict_names_a_missing_or_undecodable_video_before_reading_the_checkpoint(workdir, tmp_path):
    _, run_dir = workdir
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    missing = run("-m", "blvnet_jax.predict", f"--workdir={run_dir}", f"--video={tmp_path / 'absent.mp4'}")
    assert one_line_error(missing) == f"Video error: --video={tmp_path / 'absent.mp4'}: no such file or folder"
    broken = run("-m", "blvnet_jax.predict", f"--workdir={tmp_path / 'no_such_run'}",
                 f"--video={tmp_path / 'broken.mp4'}")  # the video is named first: no checkpoint is read
    assert one_line_error(broken).startswith(f"Video error: {tmp_path / 'broken.mp4'}: PyAV cannot decode it")


def test_a_split_without_a_usable_video_stops_before_anything_compiles(tmp_path):
    from input_pipeline import sources
    root = tmp_path / "data"
    sources.create_source(tiny_config(root).data)  # Writes the synthetic dataset as frame folders.
    (tmp_path / "val.txt").write_text("frames/val/00_0000 1 x 0\n")  # Its only line does not parse.
    frames = ["--config.data.source=frames", "--config.data.train_list=train.txt",
              f"--config.data.val_list={tmp_path}/val.txt", "--config.data.class_names_file=classes.txt"]
    result = subprocess.run(main_command(tmp_path / "run", root, *frames), env=ENV, capture_output=True, text=True,
                            timeout=300)
    assert one_line_error(result) == (
        "Config error (configs/demo.py with its --config.* overrides): No usable video in the val split: 1 listed "
        f"video left out (e.g. {tmp_path}/val.txt:1: the frame numbers and the label must be integers: "
        "'frames/val/00_0000 1 x 0'); give config.data a val split with videos.")
    assert not (tmp_path / "run").exists()
