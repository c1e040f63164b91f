"""Something-Something V1/V2: the shared base of the `ssv1_*` and `ssv2_*` settings.

Frames are extracted to folders (`{:05d}.jpg`, shorter side 256) and listed one video a line;
see input_pipeline/README.md (or prepare them with `python -m input_pipeline.prepare_tfds`). Classes say "left" and
"right", so no horizontal flip. Evaluation resizes the shorter side to the crop size, as the
official training command does (`--disable_scaleup`).
"""
from configs import base

NUM_CLASSES = 174


def get_config(version: int, depth: int, frames_per_branch: int):
    """bLVNet-TAM-`depth` with `frames_per_branch` x 2 input frames on Something-Something V`version`."""
    config = base.get_config()
    config.model.depth = depth
    config.model.num_frames = 2 * frames_per_branch
    config.model.num_classes = NUM_CLASSES
    config.data.source = "frames"
    config.data.root = f"data/something-something-v{version}/frames"
    config.data.train_list = f"data/something-something-v{version}/train.txt"
    config.data.val_list = f"data/something-something-v{version}/val.txt"
    config.data.class_names_file = f"data/something-something-v{version}/classes.txt"
    config.data.flip = False
    config.data.eval_resize_to_crop = True
    return config
