"""bLVNet-TAM-101, 32x2 frames (64 input frames), Something-Something V1, crop 224.

    python main.py --config=configs/ssv1_r101_32x2.py --workdir=DIR

Paper / official release: 53.1% top-1 on the validation set, 1 crop x 1 clip.
"""
from configs import something


def get_config():
    return something.get_config(version=1, depth=101, frames_per_branch=32)
