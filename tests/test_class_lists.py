"""A checkpoint's class names and training split against the data's: a resume on another class
list or training split is refused unless allowed, an evaluation reorders the outputs of the same
classes in another order and refuses other classes, and `init_from` copies the head only for the
same class list."""
import csv
import json
import logging
import os
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from blvnet_jax import checkpoint, recipe, train
from blvnet_jax.models import create_model
from input_pipeline import sources
from test_train import main_command, serving_batches, tiny_config
from test_user_errors import files_of, one_line_error, run

CLASSES = ["moving right", "moving left"]  # the synthetic dataset's two classes, label 0 and 1
RENAMED = ["moving right", "moving west"]
REORDERED = ["moving left", "moving right"]


def frames_data(folder, data_root, class_names) -> dict:
    """`config.data` fields that read the synthetic dataset under `data_root` as 'frames' with the
    class names `class_names` (a file in `folder`) and each video labelled by its class's place there;
    a name that is not a synthetic class names the synthetic class of its place."""
    os.makedirs(folder, exist_ok=True)
    label_of = [class_names.index(name) if name in class_names else label for label, name in enumerate(CLASSES)]
    fields = dict(source="frames", root=str(data_root), class_names_file=os.path.join(folder, "classes.txt"))
    with open(fields["class_names_file"], "w") as f:
        f.writelines(name + "\n" for name in class_names)
    for split in ("train", "val"):
        with open(os.path.join(data_root, f"{split}.txt")) as f:
            lines = [line.strip().rsplit(" ", 1) for line in f if line.strip()]
        fields[f"{split}_list"] = os.path.join(folder, f"{split}.txt")
        with open(fields[f"{split}_list"], "w") as f:
            f.writelines(f"{video} {label_of[int(label)]}\n" for video, label in lines)
    return fields


def frames_config(folder, data_root, class_names, **overrides):
    config = tiny_config(data_root, **overrides)
    config.data.update(frames_data(folder, data_root, class_names))
    return config


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("stored, data, difference", [
    (CLASSES, CLASSES, None), (None, CLASSES, None), (CLASSES, None, None),
    (["a", "b", "c"], ["a", "x", "y"], "2 of 3 class names differ: class 1 is 'b' in the checkpoint, 'x' in the data"),
    (["a", "b"], ["a", "b", "c"], "the checkpoint names 2 classes, the data 3: class 2 is missing in the checkpoint, "
                                  "'c' in the data"),
])
def test_the_difference_names_the_counts_and_the_first_other_class(stored, data, difference):
    assert recipe.class_list_difference(stored, data) == difference


class Stopped(Exception):
    pass


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A tiny training on frames data of `CLASSES`, stopped after its checkpoint of step 2 (of 4):
    (data root, workdir)."""
    root = tmp_path_factory.mktemp("interrupted")
    data_root = sources.create_source(tiny_config(root / "data").data).config.root  # writes the videos
    original = train.input_pipeline.create_train_dataset

    def stop():
        raise Stopped

    train.input_pipeline.create_train_dataset = serving_batches(2, stop)
    try:
        with pytest.raises(Stopped):
            train.train_and_evaluate(frames_config(root / "classes", data_root, CLASSES), str(root / "run"))
    finally:
        train.input_pipeline.create_train_dataset = original
    assert checkpoint.stored_metadata(str(root / "run"))[0] == 2
    return data_root, root / "run"


def test_a_resume_on_a_renamed_class_list_is_refused_naming_the_first_difference(interrupted, tmp_path):
    data_root, workdir = interrupted
    before = files_of(workdir)
    with pytest.raises(recipe.RecipeChangedError) as changed:
        train.train_and_evaluate(frames_config(tmp_path, data_root, RENAMED), str(workdir))
    assert str(changed.value) == (
        f"the checkpoint of step 2 in {workdir / 'checkpoints'} was trained on another class list than the data's "
        "(1 of 2 class names differ: class 1 is 'moving left' in the checkpoint, 'moving west' in the data); "
        "resuming would silently mix up the labels: train in another --workdir, point config.data at the "
        "checkpoint's classes, or pass --config.allow_recipe_change=True to accept the change (recorded in the log "
        "and the checkpoint)")
    assert files_of(workdir) == before


def test_a_resume_on_another_class_list_with_allow_recipe_change_is_logged_and_recorded(interrupted, tmp_path,
                                                                                         caplog):
    data_root, workdir = interrupted
    shutil.copytree(workdir, tmp_path / "run")
    with caplog.at_level(logging.WARNING):
        train.train_and_evaluate(frames_config(tmp_path, data_root, RENAMED, allow_recipe_change=True),
                                 str(tmp_path / "run"))
    assert ("Class list change accepted at step 2 (config.allow_recipe_change): 1 of 2 class names differ: class 1 is "
            "'moving left' in the checkpoint, 'moving west' in the data") in [r.getMessage() for r in caplog.records]
    step, metadata = checkpoint.stored_metadata(str(tmp_path / "run"))
    assert step == 4 and metadata["class_names"] == RENAMED
    assert metadata["recipe_changes"] == [{"step": 2, "changes": {"class_names": [CLASSES, RENAMED]}}]
    assert read_csv(tmp_path / "run" / "eval" / "step_4_1x1" / "per_class.csv")[1]["class"] == "moving west"


def test_a_resume_on_another_training_split_is_refused_unless_allowed(interrupted, tmp_path, caplog):
    data_root, workdir = interrupted
    config = frames_config(tmp_path / "data", data_root, CLASSES)
    stored = checkpoint.stored_metadata(str(workdir))[1]["train_split"]
    assert stored == sources.create_source(config.data).split_digest("train")
    with open(config.data.train_list) as f:
        lines = f.readlines()
    refused = (f"the checkpoint of step 2 in {workdir / 'checkpoints'} was trained on another training split ({{}}); "
               "resuming would not see the examples an uninterrupted run sees: train in another --workdir, restore "
               "the checkpoint's training split, or pass --config.allow_recipe_change=True to accept the change "
               "(recorded in the log and the checkpoint)")
    before = files_of(workdir)
    with open(config.data.train_list, "w") as f:
        f.writelines(lines[:-1])  # A video fewer: other examples, fewer steps per epoch.
    with pytest.raises(recipe.RecipeChangedError) as changed:
        train.train_and_evaluate(config, str(workdir))
    assert str(changed.value) == refused.format(f"{len(lines)} videos in the checkpoint's, {len(lines) - 1} in the "
                                                "data's: the learning-rate schedule changes too")
    video, start, end, label = lines[0].split()
    with open(config.data.train_list, "w") as f:
        f.writelines([f"{video} {start} {int(end) - 1} {label}\n"] + lines[1:])  # A video a frame shorter.
    with pytest.raises(recipe.RecipeChangedError) as changed:
        train.train_and_evaluate(config, str(workdir))
    assert str(changed.value) == refused.format(f"{len(lines)} videos in both, but other ids, labels or frame counts")
    assert files_of(workdir) == before
    shutil.copytree(workdir, tmp_path / "run")
    config.allow_recipe_change = True
    with caplog.at_level(logging.WARNING):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert (f"Training split change accepted at step 2 (config.allow_recipe_change): {len(lines)} videos in both, but "
            "other ids, labels or frame counts") in [r.getMessage() for r in caplog.records]
    step, metadata = checkpoint.stored_metadata(str(tmp_path / "run"))
    changed_split = sources.create_source(config.data).split_digest("train")
    assert step == 4 and metadata["train_split"] == changed_split != stored
    assert metadata["recipe_changes"] == [{"step": 2, "changes": {"train_split": [stored, changed_split]}}]


def test_evaluating_on_the_classes_in_another_order_scores_each_video_as_in_the_original_order(straight_run, tmp_path,
                                                                                              caplog):
    data_root, straight = straight_run  # trained on CLASSES; evaluated at its last step by the training
    shutil.copytree(straight, tmp_path / "run")
    original = straight / "eval" / "step_4_1x1"
    with caplog.at_level(logging.INFO):
        results = train.evaluate_checkpoint(frames_config(tmp_path / "reordered", data_root, REORDERED),
                                            str(tmp_path / "run"))
    with open(original / "results.json") as f:
        assert results == json.load(f)
    reordered = tmp_path / "run" / "eval" / "step_4_1x1"
    # Each video keeps its id, its class and its predicted classes with their probabilities.
    assert read_csv(reordered / "predictions.csv") == read_csv(original / "predictions.csv")
    assert read_csv(reordered / "per_class.csv") == read_csv(original / "per_class.csv")[::-1]  # the data's order
    assert ("The checkpoint of step 4 was trained on the data's classes in another order (2 of 2 class names differ: "
            "class 0 is 'moving right' in the checkpoint, 'moving left' in the data): its outputs are reordered to "
            "the data's labels") in [r.getMessage() for r in caplog.records]


def test_evaluating_on_other_classes_stops_in_one_line_and_changes_nothing(straight_run, tmp_path):
    data_root, straight = straight_run
    before = files_of(straight)
    data = frames_data(tmp_path, data_root, RENAMED)
    result = run(*main_command(straight, data_root, "--mode=eval",
                               *[f"--config.data.{field}={value}" for field, value in data.items()])[1:])
    assert one_line_error(result) == (
        f"Checkpoint error (--workdir={straight}): the checkpoint of step 4 in {straight / 'checkpoints'} was trained "
        "on other classes than the data's (1 of 2 class names differ: class 1 is 'moving left' in the checkpoint, "
        "'moving west' in the data); its outputs cannot be scored against these labels: evaluate it on the data of "
        "its classes (config.data.class_names_file or config.data.tfds_data_dir), or fine-tune it on these with "
        "--config.init_from")
    assert files_of(straight) == before


@pytest.mark.parametrize("class_names, described", [
    (CLASSES, "all weights"),
    (RENAMED, "all weights except the head (another class list: re-initialised); 1 of 2 class names differ: class 1 "
              "is 'moving left' in the checkpoint, 'moving west' in the data"),
    (REORDERED, "all weights except the head (another class list: re-initialised); 2 of 2 class names differ: "
                "class 0 is 'moving right' in the checkpoint, 'moving left' in the data"),
])
def test_init_from_copies_the_head_only_for_the_same_class_list(straight_run, caplog, class_names, described):
    data_root, straight = straight_run
    config = tiny_config(data_root, init_from=str(straight))
    with caplog.at_level(logging.INFO):
        model = train.initial_model(config, class_names)
    assert f"Initialised from {straight} (step 4): {described}" in [r.getMessage() for r in caplog.records]
    initialised, trained, fresh = (jax.tree.map(np.asarray, checkpoint.model_items(m)) for m in (
        model, checkpoint.restore_model(str(straight))[0], create_model(config.model, rngs=nnx.Rngs(config.seed))))
    head = initialised["params"].pop("head")
    trained_head, fresh_head = trained["params"].pop("head"), fresh["params"].pop("head")
    jax.tree.map(np.testing.assert_array_equal, initialised, trained)  # the body: copied
    jax.tree.map(np.testing.assert_array_equal, head, trained_head if class_names == CLASSES else fresh_head)
    assert not np.array_equal(trained_head["kernel"], fresh_head["kernel"])
