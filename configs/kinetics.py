"""Kinetics-400 and Moments in Time: the shared base of the `kinetics400_*` and `moments_*` settings.

Videos are prepared once into record shards (`python -m input_pipeline.prepare`, shorter side
256). A record is read whole for each clip: Kinetics' 10 s at 25-30 fps make 250-300 frames a
video (about 2.4x the official loader's speed per core instead of 3.8x at 48 frames;
input_pipeline/README.md); `--max_fps=12` keeps 120 (about 3.35x), still 7 frames in each of 16
segments; every frame is what the official frame extraction keeps. Horizontal flips are on (no
left/right classes). Fine-tuning lr 0.005. Testing uses several crops and clips per video
(softmax averaged), as in the paper's Kinetics table.
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
