"""Kinetics-400 and Moments in Time: the shared base of the `kinetics400_*` and `moments_*` settings.

Videos are prepared once into record shards (`python -m input_pipeline.prepare`, shorter side
256). Horizontal flips are on (no left/right classes). Fine-tuning lr 0.005. Testing uses several
crops and clips per video (softmax averaged), as in the paper's Kinetics table.
"""
from configs import base

DATASETS = {"kinetics400": 400, "moments": 339}


def get_config(dataset: str, frames_per_branch: int):
    """bLVNet-TAM-50 with `frames_per_branch` x 2 input frames on `dataset`."""
    config = base.get_config()
    config.model.num_frames = 2 * frames_per_branch
    config.model.num_classes = DATASETS[dataset]
    config.learning_rate = 0.005
    config.data.source = "records"
    config.data.root = f"data/{dataset}/records"
    config.data.class_names_file = f"data/{dataset}/classes.txt"
    config.data.flip = True
    config.data.num_crops = 3
    config.data.num_clips = 3
    return config
