"""The throughput benchmark: the PIL baseline's clip, and one short measurement per source."""
import random

import numpy as np
import pytest
from PIL import Image

from benchmarks import input_speed
from input_pipeline.sources import create_source


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """2 generated videos of 16 frames of 340x256, as frame folders and as the prepared TFDS dataset."""
    out = str(tmp_path_factory.mktemp("input_speed"))
    input_speed.write_data(out, num_videos=2, video_frames=16)
    return out


def test_pil_baseline_clip_is_the_normalised_official_tensor(data_dir):
    paths = [f"{data_dir}/frames/video000/{i:05d}.jpg" for i in range(1, 17)]
    box = (40, 20, 192, 168)  # x, y, width, height
    clip = input_speed.pil_clip(paths, lambda width, height: box, flip=True).numpy()
    assert clip.shape == (48, 224, 224) and clip.dtype == np.float32
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    for frame, path in enumerate(paths):
        window = Image.open(path).crop((40, 20, 232, 188)).resize((224, 224), Image.BILINEAR)
        expected = (np.asarray(window)[:, ::-1] / 255.0 - mean) / std
        np.testing.assert_allclose(clip[3 * frame:3 * frame + 3], expected.transpose(2, 0, 1),
                                   atol=1e-5)
    np.testing.assert_allclose(input_speed.pil_numpy_clip(paths, lambda width, height: box, True),
                               clip, atol=1e-6)


def test_pil_baseline_crops_are_tsn_windows_inside_the_frame():
    sides = [256, 224, 192, 168]  # int(256 * scale), 224 snapped to the crop size
    allowed = {(sides[j], sides[i]) for i in range(4) for j in range(4) if abs(i - j) <= 1}
    random.seed(0)
    drawn = {input_speed._tsn_crop(340, 256) for _ in range(500)}
    for x, y, width, height in drawn:
        assert (width, height) in allowed
        assert x % ((340 - width) // 4) == 0 and y % max(1, (256 - height) // 4) == 0
        assert x + width <= 340 and y + height <= 256
    assert {(w, h) for _, _, w, h in drawn} == allowed and len(drawn) > 60


def test_every_source_measures_a_rate(data_dir):
    for source in input_speed.SOURCES:
        assert input_speed.measure(source, data_dir, 16, seconds=0.2, batch_size=1) > 0


def test_tfds_source_stores_the_frame_folders_jpegs_as_they_are(data_dir):
    frames = create_source(input_speed.pipeline_config("frames", data_dir)).videos("train")
    stored = create_source(input_speed.pipeline_config("tfds", data_dir)).videos("train")
    assert stored.ids == frames.ids == ["video000", "video001"]
    np.testing.assert_array_equal(stored.num_frames, [16, 16])
    np.testing.assert_array_equal(stored.labels, frames.labels)
    for video in range(2):
        assert stored.read(video, range(16)) == frames.read(video, range(16))
