"""bLVNet-TAM-101, 8x2 frames (16 input frames), Something-Something V2, crop 224.

    python main.py --config=configs/ssv2_r101_8x2.py --workdir=DIR

Paper / official release: 60.2% top-1 on the validation set, 1 crop x 1 clip.
"""
from configs import something


def get_config():
    return something.get_config(version=2, depth=101, frames_per_branch=8)
