"""bLVNet-TAM-50, 16x2 frames (32 input frames), Something-Something V2, crop 224.

    python main.py --config=configs/ssv2_16x2.py --workdir=DIR

Paper / official release: 61.7% top-1 on the validation set, 1 crop x 1 clip.
"""
from configs import something


def get_config():
    return something.get_config(version=2, depth=50, frames_per_branch=16)
