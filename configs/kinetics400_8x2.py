"""bLVNet-TAM-50, 8x2 frames (16 input frames), Kinetics-400, crop 224, 3 crops x 3 clips at test.

    python main.py --config=configs/kinetics400_8x2.py --workdir=DIR

Expected accuracy: the paper's Table 3/4 row for this setting (video-level, multi-crop multi-clip).
"""
from configs import kinetics


def get_config():
    return kinetics.get_config("kinetics400", frames_per_branch=8)
