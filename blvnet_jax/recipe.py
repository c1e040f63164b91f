"""Which config fields decide what a run trains, and the check a resume makes with them.

A resume continues the optimizer state, the learning-rate schedule and the data order of the
checkpoint: a config that differs in the model, the data, the batch size, the schedule, the
optimizer or the seed would silently train something else. Every field does, unless listed in
`FREE_FIELDS` (how often things are logged, saved and evaluated, the evaluation protocol, where the
data are found and how they are fed, how the computation is laid out over devices). So does the
class list: output i of a model's head means the checkpoint's class i, label i the data's class i
(`class_list_difference`), and so does the training split: its videos, labels and lengths decide
the examples of each step, their number the steps per epoch (`train_split_difference`).
"""
import json
import logging

# Dotted config fields a resume may change freely. Any other field, including one added later,
# counts as part of the recipe.
FREE_FIELDS = frozenset({
    "log_every_steps", "checkpoint_every_steps", "keep_checkpoints", "eval_every_steps", "eval_batch_size",
    "mesh_shape", "init_from", "skip_nonfinite_steps", "allow_recipe_change",
    "model.remat", "model.pointwise_as_dot", "model.recompute_stem",  # same values, other memory/speed
    "data.root", "data.train_list", "data.val_list", "data.list_format", "data.list_separator",  # the split's
    "data.class_names_file", "data.tfds_data_dir",  # videos, labels and lengths are checked (train_split_difference)
    "data.prefetch", "data.num_parallel_calls", "data.strict", "data.max_fault_fraction",
    "data.num_crops", "data.num_clips", "data.eval_resize_to_crop",  # evaluation protocol
})


MAX_LISTED = 6  # changed fields a refused resume names; the rest are counted


class RecipeChangedError(ValueError):
    """A resume whose config or class list changes what is trained; the message names the fields or
    the first other class, in one line."""


class ClassListError(ValueError):
    """A checkpoint evaluated on data of other classes than it was trained on; the message names the
    first difference, in one line."""


def class_list_difference(checkpoint_names: list[str] | None, data_names: list[str] | None) -> str | None:
    """How the class names of a checkpoint and of the data differ, in words: "1 of 3 class names differ:
    class 2 is 'fox' in the checkpoint, 'cat' in the data". None when they are the same, or when either
    is None (nothing to compare)."""
    if checkpoint_names is None or data_names is None or list(checkpoint_names) == list(data_names):
        return None
    count = max(len(checkpoint_names), len(data_names))
    named = [[repr(names[i]) if i < len(names) else "missing" for i in range(count)]
             for names in (checkpoint_names, data_names)]
    differing = [i for i in range(count) if named[0][i] != named[1][i]]
    first = differing[0]
    counts = (f"{len(differing)} of {count} class names differ" if len(checkpoint_names) == len(data_names) else
              f"the checkpoint names {len(checkpoint_names)} classes, the data {len(data_names)}")
    return f"{counts}: class {first} is {named[0][first]} in the checkpoint, {named[1][first]} in the data"


def flatten(tree: dict, prefix: str = "") -> dict:
    """`{'model.name': 'tsn', ...}` from nested dicts (JSON values)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def recipe_changes(stored: dict, current: dict) -> dict[str, list]:
    """`{field: [stored value, current value]}` for each recipe field that differs (both configs as
    JSON dicts); fields the stored config lacks (it predates them) are not compared."""
    stored_flat, current_flat = flatten(stored), flatten(current)
    return {field: [stored_flat[field], value] for field, value in sorted(current_flat.items())
            if field not in FREE_FIELDS and field in stored_flat and stored_flat[field] != value}


def train_split_difference(checkpoint_split: dict | None, data_split: dict | None) -> str | None:
    """How the training splits of a checkpoint and of the data differ (`Source.split_digest`s), in
    words; None when they are the same, or when either is None (a checkpoint that predates the record)."""
    if checkpoint_split is None or data_split is None or checkpoint_split == data_split:
        return None
    before, now = checkpoint_split["videos"], data_split["videos"]
    if before != now:
        return f"{before} videos in the checkpoint's, {now} in the data's: the learning-rate schedule changes too"
    return f"{now} videos in both, but other ids, labels or frame counts"


def check_resume(stored: dict, config, class_names: list[str] | None, train_split: dict | None, where: str,
                 step: int) -> dict | None:
    """Raises `RecipeChangedError` when resuming `where` (step `step`, whose metadata is `stored`) with
    `config` and data of `class_names` and training split `train_split` (`Source.split_digest`)
    would change what is trained, unless `config.allow_recipe_change`; then returns the accepted
    change `{'step', 'changes'}` (logged; another class list as `changes['class_names']`, another
    training split as `changes['train_split']`: [the checkpoint's, the data's]) for the next
    checkpoint's metadata. None: no change."""
    changes = recipe_changes(stored["config"], json.loads(config.to_json_best_effort()))
    other_classes = class_list_difference(stored.get("class_names"), class_names)
    other_split = train_split_difference(stored.get("train_split"), train_split)
    allowed = config.get("allow_recipe_change", False)
    listed = [f"{field} {json.dumps(old)} -> {json.dumps(new)}" for field, (old, new) in changes.items()]
    if changes and not allowed:
        more = len(listed) - MAX_LISTED
        shown = ", ".join(listed[:MAX_LISTED]) + (f" and {more} more" if more > 0 else "")
        raise RecipeChangedError(
            f"the checkpoint of step {step} in {where} was trained with another recipe ({len(changes)} field(s) "
            f"differ: {shown}); resuming would silently train something else: train in another --workdir, resume "
            "with the checkpoint's values, or pass --config.allow_recipe_change=True to accept the change "
            "(recorded in the log and the checkpoint)")
    if other_classes and not allowed:
        raise RecipeChangedError(
            f"the checkpoint of step {step} in {where} was trained on another class list than the data's "
            f"({other_classes}); resuming would silently mix up the labels: train in another --workdir, point "
            "config.data at the checkpoint's classes, or pass --config.allow_recipe_change=True to accept the change "
            "(recorded in the log and the checkpoint)")
    if other_split and not allowed:
        raise RecipeChangedError(
            f"the checkpoint of step {step} in {where} was trained on another training split ({other_split}); "
            "resuming would not see the examples an uninterrupted run sees: train in another --workdir, restore the "
            "checkpoint's training split, or pass --config.allow_recipe_change=True to accept the change (recorded "
            "in the log and the checkpoint)")
    if changes:
        logging.warning("Recipe change accepted at step %d (config.allow_recipe_change): %s", step, ", ".join(listed))
    if other_classes:
        logging.warning("Class list change accepted at step %d (config.allow_recipe_change): %s", step, other_classes)
        changes["class_names"] = [stored["class_names"], class_names]
    if other_split:
        logging.warning("Training split change accepted at step %d (config.allow_recipe_change): %s", step,
                        other_split)
        changes["train_split"] = [stored["train_split"], train_split]
    return {"step": step, "changes": changes} if changes else None
