"""Evaluation result files: one folder per checkpoint step and protocol, predictions that name each
video, the most confused pairs beyond 30 classes, the best evaluation saved when it is measured,
and TensorBoard tags grouped `train/` and `eval/`."""
import csv
import glob
import json
import os
import shutil

import numpy as np
import PIL.Image
import tensorflow as tf

from blvnet_jax import checkpoint, evaluation, train
from input_pipeline import sources
from test_train import tiny_config


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_another_protocol_gets_its_own_folder_and_the_predictions_name_each_video(straight_run, tmp_path):
    data_root, straight = straight_run
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    first = run / "eval" / "step_4_1x1"  # the training's evaluation at its last step
    before = {name: (first / name).read_bytes() for name in os.listdir(first)}
    assert sorted(before) == ["confusion.png", "per_class.csv", "predictions.csv", "results.json"]  # 2 classes
    config = tiny_config(data_root)
    config.data.update(dict(num_crops=1, num_clips=2))
    results = train.evaluate_checkpoint(config, str(run), checkpoint.parse_step("latest"))
    assert (results["model"], results["step"], results["crops"], results["clips"]) == ("blvnet_tam", 4, 1, 2)
    assert {name: (first / name).read_bytes() for name in os.listdir(first)} == before
    second = run / "eval" / "step_4_1x2"
    with open(second / "results.json") as f:
        assert json.load(f) == results
    index = evaluation.read_index(run)
    assert [line["path"] for line in index] == ["eval/step_4_1x1", "eval/step_4_1x2"]
    assert index[1] == dict(results, path="eval/step_4_1x2")

    entries, _ = sources.read_video_list(sources.create_source(config.data).config.val_list)
    names = train.input_pipeline.create_source(config.data).class_names()  # "moving right", "moving left": spaces
    rows = read_csv(second / "predictions.csv")
    assert list(rows[0]) == ["video_index", "video_id", "label", "top1_class", "top1_probability", "top2_class",
                             "top2_probability"]
    assert [row["video_index"] for row in rows] == [str(i) for i in range(len(entries))]
    assert [row["video_id"] for row in rows] == [entry.video_dir for entry in entries]
    assert [row["label"] for row in rows] == [names[entry.label] for entry in entries]
    for row in rows:
        top1, top2 = float(row["top1_probability"]), float(row["top2_probability"])
        assert top1 >= top2 and abs(top1 + top2 - 1) < 2e-4 and {row["top1_class"], row["top2_class"]} == set(names)


def test_beyond_30_classes_the_most_confused_pairs_are_listed(tmp_path):
    names = [f"class {c}, " + ('quoted "' if c % 2 else "plain") for c in range(35)]  # csv must quote
    labels = np.repeat(np.arange(35), 2)  # two videos per class
    predicted = labels.copy()
    predicted[[6, 7]] = 7  # both videos of class 3 -> 7
    predicted[21] = 4  # one video of class 10 -> 4 and one of class 20 -> 12 (a tie: class order)
    predicted[40] = 12
    probabilities = np.full((70, 35), 0.01)
    probabilities[np.arange(70), predicted] = 0.66
    predictions = {"probabilities": probabilities, "labels": labels, "video_index": np.arange(70)}
    results = dict(model="blvnet_tam", step=7, crops=3, clips=2, **evaluation.video_metrics(probabilities, labels),
                   num_videos=70)
    image = evaluation.write_results(tmp_path, results, predictions, names, [f"video {i}" for i in range(70)])

    folder = tmp_path / "eval" / "step_7_3x2"
    assert read_csv(folder / "confused_pairs.csv") == [
        {"true": names[3], "predicted": names[7], "count": "2", "rate": "1.0000"},
        {"true": names[10], "predicted": names[4], "count": "1", "rate": "0.5000"},
        {"true": names[20], "predicted": names[12], "count": "1", "rate": "0.5000"}]
    rows = read_csv(folder / "predictions.csv")
    assert len(rows) == 70 and len(rows[0]) == 3 + 2 * 5
    assert (rows[6]["video_id"], rows[6]["label"], rows[6]["top1_class"], rows[6]["top1_probability"]) == (
        "video 6", names[3], names[7], "0.6600")
    assert evaluation.confusion_title(results) == "blvnet_tam, step 7, 3 crops x 2 clips: top-1 94.3% of 70 videos"
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    with PIL.Image.open(folder / "confusion.png") as png:
        assert png.size == (image.shape[1], image.shape[0])
    assert evaluation.read_index(tmp_path) == [dict(results, path="eval/step_7_3x2")]


def tensorboard_tags(workdir) -> set[str]:
    return {value.tag for path in glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
            for event in tf.compat.v1.train.summary_iterator(path) for value in event.summary.value}


def test_a_new_best_between_checkpoints_is_saved_and_restored_as_best(straight_run, tmp_path, monkeypatch):
    """Checkpoints every 2 steps, evaluations at 3 and 4 with top-1 0.75 then 0.5: step 3 is saved."""
    data_root, _ = straight_run
    config, run = tiny_config(data_root, eval_every_steps=3), tmp_path / "run"
    scripted, measured = iter([0.75, 0.5]), evaluation.video_metrics
    with monkeypatch.context() as patch:
        patch.setattr(evaluation, "video_metrics", lambda *args: dict(measured(*args), top1=next(scripted)))
        train.train_and_evaluate(config, str(run))
    with checkpoint.open_reader(str(run)) as manager:
        assert sorted(manager.all_steps()) == [2, 3, 4]
        assert manager.best_step() == 3 and checkpoint.best_top1(manager) == 0.75
    assert train.evaluate_checkpoint(config, str(run), checkpoint.parse_step("best"))["step"] == 3
    assert [(line["step"], line["top1"]) for line in evaluation.read_index(run)][:2] == [(3, 0.75), (4, 0.5)]

    tags = tensorboard_tags(run)
    assert {"train/loss", "train/grad_norm", "train/learning_rate", "eval/top1", "eval/confusion"} <= tags
    assert not any(tag.startswith(("train_", "eval_")) for tag in tags)
    with open(run / "metrics.jsonl") as f:
        logged = [json.loads(line) for line in f]
    assert {"train/loss", "eval/top1"} <= set().union(*logged) and not any("train_loss" in line for line in logged)
