"""Kinetics-400 and Moments in Time: the shared base of the `kinetics400_*` and `moments_*` settings.

Videos are prepared once from the releases as distributed (`python -m input_pipeline.prepare_tfds
--dataset=kinetics400` or `moments_in_time`, shorter side 256, every frame as the official frame
extraction keeps; a clip reads only its own frames, however long the video). Horizontal flips
are on (no left/right classes). Fine-tuning lr 0.005. Testing uses several crops and clips per video
(softmax averaged), as in the paper's Kinetics table.
"""
from configs import base

DATASETS = {"kinetics400": 400, "moments": 339}
TFDS_NAMES = {"kinetics400": "kinetics400", "moments": "moments_in_time"}


def get_config(dataset: str, frames_per_branch: int):
    """bLVNet-TAM-50 with `frames_per_branch` x 2 input frames on `dataset`."""
    config = base.get_config()
    config.model.num_frames = 2 * frames_per_branch
    config.model.num_classes = DATASETS[dataset]
    config.learning_rate = 0.005
    config.data.source = "tfds"
    config.data.tfds_name = TFDS_NAMES[dataset]
    config.data.tfds_data_dir = "data/tfds"  # placeholder: the --data_dir of prepare_tfds
    config.data.flip = True
    config.data.num_crops = 3
    config.data.num_clips = 3
    return config
