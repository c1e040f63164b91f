"""Checks a config before anything is built or compiled; each error names the field to fix."""
import json

import jax

from blvnet_jax import hosts
from blvnet_jax.models import check_model_config

MIN_CROP_SIZE = 32  # five stride-2 stages; smaller inputs leave layer4 nothing to see
# Model fields that change parameter shapes: a checkpoint must agree on them to initialise from it.
SHAPE_FIELDS = ("name", "depth", "alpha", "beta", "blending_frames", "width", "input_channels")
# Model fields a checkpoint must agree on to be evaluated with a config: the shapes, and what its
# evaluation's files are filed under (`eval/step_<N>_<crops>x<clips>` would hide another frame count).
EVALUATED_FIELDS = SHAPE_FIELDS + ("num_classes", "num_frames")


class ConfigError(ValueError):
    """A config value that cannot work; the message says which field and what to do."""


def check_model(model_config, crop_size: int) -> None:
    try:
        check_model_config(model_config)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if crop_size < MIN_CROP_SIZE:
        raise ConfigError(f"config.data.crop_size={crop_size} is too small: the network downsamples 32x; "
                          f"use at least {MIN_CROP_SIZE} (224 in the paper; 112, 160, ... work too)")


def check_input_channels(model_config) -> None:
    """Our input pipeline and prediction read RGB frames: the model must take 3 channels."""
    if model_config.input_channels != 3:
        raise ConfigError(f"config.model.input_channels={model_config.input_channels}: the input pipeline reads "
                          "RGB frames (3 channels) and has no optical-flow source; use 3 (a flow model, e.g. a "
                          "converted official one, runs only on batches built outside input_pipeline)")


def check_data(config, splits=("train", "val")) -> None:
    """The data files of `splits` are found and the model has one output per class of the data
    (when the data says how many it has): the source's `preflight`, which reads no video. Each host
    checks the data it sees; when one fails, all of them stop (`hosts.together`)."""
    from input_pipeline import sources  # TensorFlow: imported once the cheaper checks have passed
    with hosts.together(ConfigError):
        try:
            count, where = sources.preflight(config.data, splits)
        except (FileNotFoundError, ValueError) as error:
            raise ConfigError(str(error)) from None
        if count and count != config.model.num_classes:
            raise ConfigError(f"config.model.num_classes={config.model.num_classes} but the data has {count} "
                              f"classes ({where}): set --config.model.num_classes={count}")


def model_differences(stored_model: dict, model_config, fields: tuple[str, ...]) -> tuple[str, str]:
    """`('model.width=8', 'model.width=16')`: the `fields` in which a checkpoint's stored model config
    (JSON) and `model_config` differ, spelled with each one's values; `('', '')` if none (fields the
    checkpoint predates are not compared)."""
    differ = [field for field in fields if field in stored_model and stored_model[field] != model_config[field]]
    return tuple(", ".join(f"model.{field}={json.dumps(values[field])}" for field in differ)
                 for values in (stored_model, model_config))


def check_init_from(config) -> None:
    """`config.init_from` must be a workdir with a checkpoint of the same architecture."""
    from blvnet_jax import checkpoint  # Orbax only when there is something to read
    step, metadata = checkpoint.stored_metadata(config.init_from)  # read-only: creates nothing there
    if step is None:
        raise ConfigError(f"config.init_from={config.init_from!r} has no checkpoint under "
                          f"{checkpoint.checkpoint_dir(config.init_from)}: convert the released weights there "
                          "(python -m blvnet_jax.convert), or set --config.init_from= to train from scratch")
    stored, configured = model_differences(metadata["config"]["model"], config.model, SHAPE_FIELDS)
    if stored:
        raise ConfigError(f"config.init_from={config.init_from!r} holds {stored} but this config has {configured}: "
                          "initialise from a checkpoint of the same architecture")


def check_workdir_model(config, workdir: str) -> None:
    """The latest checkpoint of `workdir` holds the model `config` evaluates (`EVALUATED_FIELDS`);
    read-only, and a workdir without one passes (reading it then says so)."""
    from blvnet_jax import checkpoint  # Orbax only when there is something to read
    step, metadata = checkpoint.stored_metadata(workdir)
    if step is None:
        return
    stored, configured = model_differences(metadata["config"]["model"], config.model, EVALUATED_FIELDS)
    if stored:
        raise ConfigError(f"the checkpoint of step {step} in {checkpoint.checkpoint_dir(workdir)} holds {stored} but "
                          f"this config has {configured}: evaluate it with the config it was trained with, or give "
                          "the --workdir of a model of this config")


def check_frame_split(model_config, frames: int) -> None:
    """Each of `frames` devices holds an equal block of every clip's frames (bLVNet: of its frame
    pairs, also at layer4, which runs on one frame per pair), and a temporal module reaches at
    most into the neighbouring block."""
    bigger_little = model_config.name.startswith("blvnet")
    unit = 2 * frames if bigger_little else frames
    if model_config.num_frames % unit:
        raise ConfigError(f"config.mesh_shape splits frames over {frames} devices but config.model.num_frames="
                          f"{model_config.num_frames} is not a multiple of {unit}"
                          + (" (bLVNet splits frame pairs)" if bigger_little else ""))
    block = model_config.num_frames // unit
    reach = 1 if model_config.name in ("tsm", "blvnet_tsm") else model_config.blending_frames // 2
    if model_config.name not in ("tsn", "blvnet") and block < reach:
        raise ConfigError(f"config.mesh_shape splits frames over {frames} devices: blocks of {block} "
                          f"{'frame pairs' if bigger_little else 'frames'} are shorter than the temporal "
                          f"module's reach of {reach}; split over fewer devices or use more frames")


def check_training(config) -> None:
    """Everything a training run needs, in the order a user would fix it."""
    check_model(config.model, config.data.crop_size)
    check_input_channels(config.model)
    devices = jax.device_count()
    data, frames = config.mesh_shape
    if frames < 1 or devices % frames or (data != -1 and data * frames != devices):
        raise ConfigError(f"config.mesh_shape={tuple(config.mesh_shape)} must multiply to the {devices} devices "
                          "(-1 for data takes the rest)")
    if frames > 1:
        check_frame_split(config.model, frames)
    data_devices = devices // frames
    for field in ("batch_size", "eval_batch_size"):
        if config[field] < 1 or config[field] % data_devices:
            raise ConfigError(f"config.{field}={config[field]} must be a positive multiple of the {data_devices} "
                              "devices of the data axis (each takes an equal share)")
    check_data(config)
    if config.init_from:
        check_init_from(config)


def check_evaluation(config) -> None:
    """What evaluating a checkpoint needs: the model and the validation data."""
    check_model(config.model, config.data.crop_size)
    check_input_channels(config.model)
    check_data(config, splits=("val",))
