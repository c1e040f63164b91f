"""Baseline `blvnet` (bLResNet-50 backbone, 8x2 frames) on Something-Something V1, for the paper's Table 5.

    python main.py --config=configs/ssv1_blvnet.py --workdir=DIR
"""
from configs import baselines


def get_config():
    return baselines.get_config("blvnet", num_frames=16)
