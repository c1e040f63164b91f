"""The baselines of the paper's Table 5 on Something-Something V1, beside bLVNet-TAM-50 8x2.

Frame models (TSN, TSM, TSN+TAM) see 8 frames by default, the bLVNet variants 8x2 = 16; compare
at other counts with --config.model.num_frames=N.
"""
from configs import something


def get_config(name: str, num_frames: int):
    config = something.get_config(version=1, depth=50, frames_per_branch=num_frames // 2)
    config.model.name = name
    config.model.num_frames = num_frames
    return config
