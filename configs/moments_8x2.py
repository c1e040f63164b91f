"""bLVNet-TAM-50, 8x2 frames (16 input frames), Moments in Time, crop 224, 3 crops x 3 clips at test.

    python main.py --config=configs/moments_8x2.py --workdir=DIR

Expected accuracy: the paper's Table 3/4 row for this setting (video-level, multi-crop multi-clip).
"""
from configs import kinetics


def get_config():
    return kinetics.get_config("moments", frames_per_branch=8)
