"""Baseline `tsn` (ResNet-50 backbone, 8 frames) on Something-Something V1, for the paper's Table 5.

    python main.py --config=configs/ssv1_tsn.py --workdir=DIR
"""
from configs import baselines


def get_config():
    return baselines.get_config("tsn", num_frames=8)
