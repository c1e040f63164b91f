"""Workdirs you can trust: one training per workdir, resumes that refuse a changed recipe, read-only
evaluation and prediction, and a failed save that stops training at that save."""
import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest
from orbax.checkpoint._src.serialization import serialization

from blvnet_jax import checkpoint, predict, recipe, train, workdir_lock
from blvnet_jax.workdir_lock import WorkdirBusyError, WorkdirLock
from etils import epath
from test_train import main_command, serving_batches, tiny_config

ENV = dict(os.environ, PYTHONPATH=os.getcwd())


def write_lock(workdir, **holder):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, workdir_lock.LOCK_NAME), "w") as f:
        json.dump(dict(dict(since="2025-01-01 00:00:00 UTC", heartbeat=time.time(), token="x"), **holder), f)


def dead_pid():
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_held_lock_is_refused_naming_its_holder_and_a_stale_one_is_taken_over(tmp_path, caplog):
    workdir = epath.Path(tmp_path)
    with WorkdirLock(workdir):
        with pytest.raises(WorkdirBusyError) as busy:
            WorkdirLock(workdir).__enter__()
    message = str(busy.value)
    assert f"in use by another training: PID {os.getpid()} on {socket.gethostname()}, running since" in message
    assert "\n" not in message and not (tmp_path / workdir_lock.LOCK_NAME).exists()

    write_lock(tmp_path, host="another-host", pid=1, heartbeat=time.time() - 60)  # alive elsewhere: refused
    with pytest.raises(WorkdirBusyError, match="PID 1 on another-host"):
        WorkdirLock(workdir).__enter__()
    stale = [dict(host="another-host", pid=1, heartbeat=time.time() - 2 * workdir_lock.STALE_AFTER_S),
             dict(host=socket.gethostname(), pid=dead_pid())]
    for holder in stale:
        write_lock(tmp_path, **holder)
        with caplog.at_level(logging.WARNING), WorkdirLock(workdir):
            assert json.loads((tmp_path / workdir_lock.LOCK_NAME).read_text())["pid"] == os.getpid()
        assert not (tmp_path / workdir_lock.LOCK_NAME).exists()
    assert [r.getMessage().split(": ")[-1] for r in caplog.records if "Taking over the stale lock" in r.getMessage()] \
        == [f"its heartbeat is {2 * workdir_lock.STALE_AFTER_S:.0f} s old (over {workdir_lock.STALE_AFTER_S:.0f} s)",
            f"process {stale[1]['pid']} no longer runs on this host"]


def test_a_second_training_in_the_same_workdir_stops_in_one_line(tmp_path):
    (tmp_path / "run").mkdir()
    with WorkdirLock(epath.Path(tmp_path / "run")):  # this test process plays the running training
        second = subprocess.run(main_command(tmp_path / "run", tmp_path / "data"), env=ENV, capture_output=True,
                                text=True, timeout=600)
    assert second.returncode == 1 and "Traceback" not in second.stderr
    last = second.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Workdir error (--workdir={tmp_path / 'run'}): the workdir {tmp_path / 'run'} is in "
                           f"use by another training: PID {os.getpid()} on {socket.gethostname()}, running since")
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.fixture(scope="module")
def preempted(tmp_path_factory):
    """A tiny training that takes over a stale lock and is preempted (SIGTERM) at step 2:
    (data root, workdir, its log lines)."""
    root = tmp_path_factory.mktemp("preempted")
    write_lock(root / "run", host=socket.gethostname(), pid=dead_pid())
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger().addHandler(handler)
    original = train.input_pipeline.create_train_dataset
    train.input_pipeline.create_train_dataset = serving_batches(2, lambda: os.kill(os.getpid(), signal.SIGTERM))
    try:
        assert train.train_and_evaluate(tiny_config(root / "data"), str(root / "run")) == {}
    finally:
        train.input_pipeline.create_train_dataset = original
        logging.getLogger().removeHandler(handler)
    return root / "data", root / "run", [record.getMessage() for record in records]


def test_a_stale_lock_is_taken_over_and_released_after_preemption(preempted):
    _, workdir, log = preempted
    assert any(line.startswith(f"Taking over the stale lock {workdir / workdir_lock.LOCK_NAME}") for line in log)
    assert sorted(checkpoint.open_reader(str(workdir)).all_steps()) == [2, 3]
    assert not (workdir / workdir_lock.LOCK_NAME).exists()


def test_the_lock_is_released_after_an_exception(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "device_memory_bytes", lambda: 1024)
    with pytest.raises(MemoryError):
        train.train_and_evaluate(tiny_config(tmp_path / "data"), str(tmp_path / "run"))
    assert not (tmp_path / "run" / workdir_lock.LOCK_NAME).exists()


def test_a_resume_with_another_recipe_is_refused_naming_each_field(preempted):
    data_root, workdir, _ = preempted
    config = tiny_config(data_root, batch_size=8, learning_rate=0.5,  # recipe fields
                         log_every_steps=3, keep_checkpoints=5, eval_batch_size=8, mesh_shape=(1, 1))  # free ones
    config.model.name = "tsn"
    config.data.update(dict(num_crops=3, num_clips=2))
    with pytest.raises(recipe.RecipeChangedError) as changed:
        train.train_and_evaluate(config, str(workdir))
    assert str(changed.value) == (
        f"the checkpoint of step 3 in {workdir / 'checkpoints'} was trained with another recipe (3 field(s) differ: "
        'batch_size 4 -> 8, learning_rate 0.05 -> 0.5, model.name "blvnet_tam" -> "tsn"); resuming would silently '
        "train something else: train in another --workdir, resume with the checkpoint's values, or pass "
        "--config.allow_recipe_change=True to accept the change (recorded in the log and the checkpoint)")
    assert sorted(checkpoint.open_reader(str(workdir)).all_steps()) == [2, 3]
    assert not (workdir / workdir_lock.LOCK_NAME).exists()


def test_main_prints_a_changed_recipe_in_one_line(preempted):
    data_root, workdir, _ = preempted
    resumed = subprocess.run(main_command(workdir, data_root, "--config.model.name=tsn"), env=ENV,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 1 and "Traceback" not in resumed.stderr
    message = resumed.stderr[resumed.stderr.index("Resume error"):].strip()
    assert message.startswith(f"Resume error (--workdir={workdir}): the checkpoint of step 3") and "\n" not in message
    assert '(2 field(s) differ: model.name "blvnet_tam" -> "tsn", num_train_steps 4 -> 3)' in message


def test_a_deliberate_recipe_change_is_logged_and_recorded(preempted, tmp_path, caplog):
    data_root, workdir, _ = preempted
    shutil.copytree(workdir, tmp_path / "run")
    with caplog.at_level(logging.WARNING):
        train.train_and_evaluate(tiny_config(data_root, learning_rate=0.02, allow_recipe_change=True),
                                 str(tmp_path / "run"))
    assert any("Recipe change accepted at step 3 (config.allow_recipe_change): learning_rate 0.05 -> 0.02"
               in r.getMessage() for r in caplog.records)
    with checkpoint.open_reader(str(tmp_path / "run")) as manager:
        assert manager.latest_step() == 4
        metadata = manager.restore(4, args=checkpoint.metadata_restore_args())["metadata"]
    assert metadata["recipe_changes"] == [{"step": 3, "changes": {"learning_rate": [0.05, 0.02]}}]
    assert metadata["config"]["learning_rate"] == 0.02


def test_free_fields_are_not_a_recipe_change():
    stored = json.loads(tiny_config("/data").to_json_best_effort())
    config = tiny_config("/elsewhere", log_every_steps=7, checkpoint_every_steps=9, keep_checkpoints=1,
                         eval_every_steps=5, eval_batch_size=8, mesh_shape=(2, 1), init_from="/w")
    config.data.update(dict(num_crops=3, num_clips=2, prefetch=4, num_parallel_calls=2, list_format="tsn",
                            list_separator=";"))  # Lists of the same split: its videos are compared instead.
    config.model.remat = True
    assert recipe.recipe_changes(stored, json.loads(config.to_json_best_effort())) == {}
    del stored["model"]["dropout"]  # a field the checkpoint predates is not compared
    config.model.dropout = 0.1
    assert recipe.recipe_changes(stored, json.loads(config.to_json_best_effort())) == {}


def test_evaluation_and_prediction_create_nothing_in_a_workdir_without_checkpoints(tmp_path):
    typo = tmp_path / "no_such_run"
    expected = f"no checkpoint under {typo / 'checkpoints'}"
    with pytest.raises(checkpoint.NoCheckpointError, match=expected):
        train.evaluate_checkpoint(tiny_config(tmp_path / "data"), str(typo))
    with pytest.raises(checkpoint.NoCheckpointError, match=expected):
        predict.predict(str(typo), str(tmp_path / "video.mp4"))
    assert not typo.exists()


def test_a_failed_save_stops_training_at_that_save_and_a_restart_resumes(tmp_path, monkeypatch):
    config = tiny_config(tmp_path / "data", num_train_steps=6, eval_every_steps=3)
    workdir = tmp_path / "run"
    original = serialization.async_serialize_from_host

    async def disk_full_at_step_4(rslices_on_host, tensorstore_spec, **kwargs):
        if "/4.orbax-checkpoint-tmp" in json.dumps(tensorstore_spec):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(workdir / "checkpoints" / "4"))
        return await original(rslices_on_host, tensorstore_spec, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(serialization, "async_serialize_from_host", disk_full_at_step_4)
        with pytest.raises(checkpoint.SaveError) as failed:
            train.train_and_evaluate(config, str(workdir))
    message = str(failed.value)
    assert message.startswith(f"could not save the checkpoint of step 4 to {workdir / 'checkpoints' / '4'}: ")
    assert "No space left on device" in message and "\n" not in message
    assert message.endswith(f"In {workdir / 'checkpoints'}, intact: step(s) 2, 3, the latest read back; free space "
                            "or fix permissions and run the same command to resume from step 3")
    with open(workdir / "metrics.jsonl") as f:
        evaluated = [json.loads(line)["step"] for line in f if "eval/top1" in line]
    assert evaluated == [3]  # the evaluation at step 6 did not run after the failed save
    assert sorted(checkpoint.open_reader(str(workdir)).all_steps()) == [2, 3]  # 3: the best evaluation, saved
    assert not (workdir / workdir_lock.LOCK_NAME).exists()
    train.train_and_evaluate(config, str(workdir))  # space freed: resumes from step 3 and ends
    assert sorted(checkpoint.open_reader(str(workdir)).all_steps()) == [3, 4, 6]  # the latest 3 (one the best)
    assert not any("orbax-checkpoint-tmp" in name for name in os.listdir(workdir / "checkpoints"))
