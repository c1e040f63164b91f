"""Crop windows and views: TSN's rules, one window per clip, flips."""
import io

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from input_pipeline import transforms

SCALES = (1.0, 0.875, 0.75, 0.66)


def _jpeg(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_train_crop_window_follows_tsn_rules():
    # Shorter side 256: sides int(256 * scale) = 256, 224, 192, 168 (224 is the crop size).
    sides = [256, 224, 192, 168]
    allowed = {(sides[i], sides[j]) for i in range(4) for j in range(4) if abs(i - j) <= 1}
    seen = set()
    for k in range(300):
        seed = tf.constant([7, k])
        y, x, h, w = transforms.train_crop_window(256, 340, 224, SCALES, 1, seed).numpy()
        assert (h, w) in allowed
        y_step, x_step = (256 - h) // 4, (340 - w) // 4
        assert y % max(y_step, 1) == 0 and x % max(x_step, 1) == 0
        assert 0 <= y <= 4 * y_step and 0 <= x <= 4 * x_step
        seen.add((h, w))
    assert seen == allowed


def test_train_crop_window_snaps_sides_near_crop_size():
    # Sides int(110 * scale) = 110, 96, 82, 72; 110 is within 2 pixels of the crop size 112.
    windows = {tuple(transforms.train_crop_window(110, 150, 112, SCALES, 0, tf.constant([0, k]))
                     .numpy()[2:]) for k in range(100)}
    assert windows == {(112, 112), (96, 96), (82, 82), (72, 72)}


def test_decode_train_clip_same_window_and_flip_on_every_frame():
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    jpegs = tf.constant([_jpeg(image)] * 4)
    for k in range(5):
        seed = tf.constant([1, k])
        decode = lambda flip: transforms.decode_train_clip(jpegs, 32, SCALES, 1, seed,
                                                           tf.constant(flip)).numpy()
        plain, flipped = decode(False), decode(True)
        assert plain.shape == (4, 32, 32, 3) and plain.dtype == np.uint8
        assert all(np.array_equal(frame, plain[0]) for frame in plain)
        np.testing.assert_array_equal(flipped, plain[:, :, ::-1])


def test_frame_windows_cut_the_same_part_of_frames_of_other_sizes():
    shapes = tf.constant([[100, 200, 3], [50, 100, 3], [100, 200, 3], [60, 300, 3]])
    windows = transforms.frame_windows(shapes, tf.constant([10, 40, 60, 80])).numpy()
    np.testing.assert_array_equal(windows, [[10, 40, 60, 80], [5, 20, 30, 40], [10, 40, 60, 80], [6, 60, 36, 120]])


@pytest.mark.parametrize("format, tolerance", [("PNG", 1.0), ("JPEG", 2.0)])
def test_a_video_whose_resolution_changes_gives_the_clips_of_one_resolution(format, tolerance):
    # Frames 1 and 3 at twice and half the size of frames 0 and 2, as a stream whose resolution
    # changes: its clips and views are those of the same picture at one resolution, within what
    # resizing (and JPEG coding at another resolution) changes. Cut as pixel boxes of frame 0,
    # frame 1's would differ by tens of grey levels.
    rng = np.random.default_rng(5)
    picture = Image.fromarray(rng.integers(0, 255, (8, 12, 3), np.uint8)).resize((192, 128), Image.BICUBIC)
    options = {"quality": 95, "subsampling": 0} if format == "JPEG" else {}
    encode = lambda size: _encoded(np.asarray(picture.resize(size, Image.LANCZOS)), format, **options)
    changing = tf.constant([encode(size) for size in ((96, 64), (192, 128), (96, 64), (48, 32))])
    constant = tf.constant([encode((96, 64))] * 4)
    jpeg = format == "JPEG"
    for k in range(5):
        clips = [transforms.decode_train_clip(frames, 32, SCALES, 1, tf.constant([2, k]), tf.constant(k % 2 == 0),
                                              jpeg).numpy().astype(float) for frames in (changing, constant)]
        assert np.mean(np.abs(clips[0] - clips[1])) < tolerance
    views = [transforms.eval_views(transforms.decode_frames(frames, jpeg), 48, 56, 3).numpy().astype(float)
             for frames in (changing, constant)]
    assert views[0].shape == (3, 4, 48, 48, 3)
    assert np.mean(np.abs(views[0] - views[1])) < tolerance


def test_decode_train_clip_crops_the_window():
    # A full-size window (scale 1 on a square image) resized to the same size keeps the image.
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)
    jpeg = _jpeg(image)
    decoded = tf.io.decode_jpeg(jpeg).numpy()
    clip = transforms.decode_train_clip(tf.constant([jpeg, jpeg]), 32, (1.0,), 0,
                                        tf.constant([0, 0]), tf.constant(False)).numpy()
    np.testing.assert_array_equal(clip[0], decoded)


def test_decode_train_clip_is_the_decoded_window_resized():
    # Windows starting at any column, not only at multiples of libjpeg's 16-column blocks.
    image = np.random.default_rng(1).integers(0, 255, (96, 128, 3), np.uint8)
    jpegs = tf.constant([_jpeg(image)] * 2)
    columns = set()
    for k in range(20):
        seed = tf.constant([2, k])
        window = transforms.train_crop_window(96, 128, 64, SCALES, 1, seed)
        columns.add(int(window[1]) % 16)
        expected = transforms.resize_uint8(tf.io.decode_and_crop_jpeg(jpegs[0], window, channels=3),
                                           64, 64).numpy()
        for flip in (False, True):
            clip = transforms.decode_train_clip(jpegs, 64, SCALES, 1, seed, tf.constant(flip)).numpy()
            np.testing.assert_array_equal(clip[1], expected[:, ::-1] if flip else expected)
    assert len(columns) > 1


def _encoded(image, format, **options):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=format, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("format", ["PNG", "BMP"])
def test_frames_of_lossless_formats_decode_to_their_pixels(format):
    # Frame folders of PNG or BMP images, which the official loader's PIL reads too.
    rng = np.random.default_rng(3)
    images = rng.integers(0, 255, (3, 48, 70, 3), np.uint8)
    frames = tf.constant([_encoded(image, format) for image in images])
    np.testing.assert_array_equal(np.stack(transforms.decode_frames(frames, jpeg=False)), images)
    for k in range(5):
        seed = tf.constant([4, k])
        y, x, h, w = transforms.train_crop_window(48, 70, 32, SCALES, 1, seed).numpy()
        expected = transforms.resize_uint8(images[:, y:y + h, x:x + w], 32, 32).numpy()
        for flip in (False, True):
            clip = transforms.decode_train_clip(frames, 32, SCALES, 1, seed, tf.constant(flip), jpeg=False).numpy()
            np.testing.assert_array_equal(clip, expected[:, :, ::-1] if flip else expected)


def test_resize_shorter_side():
    assert transforms.resize_shorter_side(tf.zeros([2, 50, 70, 3], tf.uint8), 64).shape == (
        2, 64, 89, 3)
    assert transforms.resize_shorter_side(tf.zeros([2, 70, 50, 3], tf.uint8), 64).shape == (
        2, 89, 64, 3)
    assert transforms.eval_resize_side(224, False) == 256
    assert transforms.eval_resize_side(224, True) == 224


def _position_frames(height, width):
    """(2, h, w, 3) uint8 frames whose pixels encode their row, column and frame."""
    yy, xx = np.mgrid[:height, :width]
    frame = np.stack([yy, xx, np.zeros_like(yy)], axis=-1).astype(np.uint8)
    frames = np.stack([frame, frame])
    frames[1, ..., 2] = 1
    return frames


@pytest.mark.parametrize("height, width, num_crops, corners", [
    (100, 121, 1, [(0, 10)]),  # round(21 / 2) = 10 (half to even).
    (100, 120, 3, [(0, 0), (0, 20), (0, 10)]),  # Left, right, centre; x step 20 // 4 = 5.
    (120, 100, 3, [(0, 0), (20, 0), (10, 0)]),  # Top, bottom, centre.
])
def test_eval_views_corners(height, width, num_crops, corners):
    frames = _position_frames(height, width)
    views = transforms.eval_views(list(frames), 100, 100, num_crops).numpy()
    assert views.shape == (num_crops, 2, 100, 100, 3)
    for view, (y, x) in zip(views, corners):
        np.testing.assert_array_equal(view, frames[:, y:y + 100, x:x + 100])


def test_eval_views_ten_crops_are_five_corners_and_their_flips():
    frames = _position_frames(108, 120)  # Steps: y (108-100)//4 = 2, x (120-100)//4 = 5.
    views = transforms.eval_views(list(frames), 100, 108, 10).numpy()
    corners = [(0, 0), (0, 20), (8, 0), (8, 20), (4, 10)]
    assert views.shape == (10, 2, 100, 100, 3)
    for i, (y, x) in enumerate(corners):
        np.testing.assert_array_equal(views[2 * i], frames[:, y:y + 100, x:x + 100])
        np.testing.assert_array_equal(views[2 * i + 1], frames[:, y:y + 100, x:x + 100][:, :, ::-1])


def test_eval_views_rejects_other_crop_counts():
    with pytest.raises(ValueError, match="num_crops=5"):
        transforms.eval_views([tf.zeros([100, 100, 3], tf.uint8)], 100, 100, 5)


def test_evaluation_decodes_the_pixels_pil_decodes():
    # The official loader decodes with PIL; TF's default fast IDCT would differ by a grey level
    # on most pixels of a textured, chroma-subsampled frame like this one.
    rng = np.random.default_rng(0)
    smooth = Image.fromarray(rng.integers(0, 255, (9, 12, 3), np.uint8)).resize((340, 256),
                                                                                 Image.BICUBIC)
    frames = [np.clip(np.asarray(smooth, np.float32) + rng.normal(0, 8, (256, 340, 3)), 0, 255)
              .astype(np.uint8) for _ in range(2)]
    jpegs = [_jpeg(frame) for frame in frames]
    decoded = np.stack(transforms.decode_frames(tf.constant(jpegs)))
    official = np.stack([np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")) for jpeg in jpegs])
    np.testing.assert_array_equal(decoded, official)


@pytest.mark.parametrize("side", [168, 192, 256])
def test_training_resize_is_close_to_the_official_pil_bilinear(side):
    # The official loader resizes crops with PIL's bilinear filter, which antialiases when it
    # shrinks; ours does not. Crops of 168-256 pixels resized to 224 stay within a grey level.
    rng = np.random.default_rng(side)
    smooth = Image.fromarray(rng.integers(0, 255, (12, 12, 3), np.uint8)).resize(
        (side, side), Image.BICUBIC)
    image = np.clip(np.asarray(smooth, np.float32) + rng.normal(0, 3, (side, side, 3)), 0, 255)
    image = image.astype(np.uint8)
    ours = transforms.resize_uint8(tf.constant(image), 224, 224).numpy()
    official = np.asarray(Image.fromarray(image).resize((224, 224), Image.BILINEAR))
    assert ours.dtype == np.uint8 and ours.shape == (224, 224, 3)
    assert np.mean(np.abs(ours.astype(float) - official)) < 1.0


@pytest.mark.parametrize("height, width", [(168, 192), (192, 168), (224, 256), (256, 224), (256, 256)])
def test_training_resize_equals_the_uint8_kernel(height, width):
    # The resize casts to float first for speed; TF's uint8 kernel gives the very same pixels.
    image = np.random.default_rng(height + width).integers(0, 256, (height, width, 3), np.uint8)
    uint8_kernel = tf.cast(tf.image.resize(tf.constant(image), [224, 224]) + 0.5, tf.uint8)
    np.testing.assert_array_equal(transforms.resize_uint8(tf.constant(image), 224, 224),
                                  uint8_kernel)
