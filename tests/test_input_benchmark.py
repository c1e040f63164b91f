"""The throughput benchmark: the PIL baseline's clip, and one short measurement per source."""
import numpy as np
import pytest

from input_pipeline import benchmark


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """2 generated videos of 16 frames of 340x256, as frame folders and record shards."""
    out = str(tmp_path_factory.mktemp("benchmark"))
    benchmark.write_data(out, num_videos=2, video_frames=16)
    return out


def test_pil_baseline_clip_is_the_normalised_official_tensor(data_dir):
    paths = [f"{data_dir}/frames/video000/{i:05d}.jpg" for i in range(1, 17)]
    clip = benchmark.pil_clip(paths)
    assert clip.shape == (48, 224, 224) and clip.dtype == np.float32
    # ImageNet-normalised pixels lie in [-0.485 / 0.229, (1 - 0.406) / 0.225].
    assert -2.2 < clip.min() < clip.max() < 2.7


def test_every_source_measures_a_rate(data_dir):
    for source in benchmark.SOURCES:
        assert benchmark.measure(source, data_dir, 16, seconds=0.2, batch_size=1) > 0
