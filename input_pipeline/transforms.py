"""Crops, resizes and flips of whole clips in TensorFlow, the same part of the picture in every frame.

Training decodes only one crop window per frame (`tf.io.decode_and_crop_jpeg`), resizes it, then
flips the clip (`decode_train_clip`); evaluation decodes whole frames (`decode_frames`), resizes the
shorter side and cuts 1, 3 or 10 views, as the official code. All outputs are uint8. Frames of
one video may differ in size (a resolution that changes): training cuts the same part of the
picture from each, evaluation resizes and cuts each on its own, as the official loader.

Frames are JPEG (what the datasets ship and the stored format keeps), or, with `jpeg=False`, PNG,
BMP or GIF (frame folders the official loader's PIL reads too), decoded whole with
`tf.io.decode_image`: the same pixels as PIL's, these formats being lossless. The format is the
source's (`sources.Videos.jpeg`), not looked up per clip (a branch on it in the graph cost training
up to 6%).

Evaluation decodes with libjpeg's accurate integer IDCT, as PIL (the official loader) does:
the same pixels, bit for bit. Training keeps TensorFlow's default fast IDCT, within a few grey
levels of it (one on average; the accurate one makes the decode 5% slower).
"""
import itertools

from input_pipeline.tensorflow_cpu import tf


def _pick(values, seed):
    """One element of the int32 vector `values`, chosen uniformly by a stateless seed."""
    index = tf.random.stateless_uniform([], seed, 0, tf.shape(values)[0], dtype=tf.int32)
    return tf.gather(values, index)


def tsn_offsets(image_height, image_width, crop_height, crop_width, more_fix_crop=True):
    """TSN's fixed crop corners as int32 (count, 2) rows of (y, x): 5 positions, or 13 with more."""
    y_step = (image_height - crop_height) // 4
    x_step = (image_width - crop_width) // 4
    grid = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]
    if more_fix_crop:
        grid += [(2, 0), (2, 4), (4, 2), (0, 2), (1, 1), (1, 3), (3, 1), (3, 3)]
    return tf.stack([tf.stack([y * y_step, x * x_step]) for y, x in grid])


def train_crop_window(image_height, image_width, crop_size, scales, max_distort, seed):
    """TSN multi-scale crop with aspect jitter: int32 [y, x, height, width] of one window.

    Crop sides are int(shorter side * scale), snapped to crop_size when within 2 pixels; height
    and width scales are drawn as one of the pairs whose positions differ by at most
    `max_distort`; the corner is one of TSN's 13 fixed positions.
    """
    pair_seed, offset_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    shorter = tf.cast(tf.minimum(image_height, image_width), tf.float64)
    sides = tf.cast(shorter * tf.constant(scales, tf.float64), tf.int32)
    sides = tf.where(tf.abs(sides - crop_size) < 3, crop_size, sides)
    pairs = [(i, j) for i, j in itertools.product(range(len(scales)), repeat=2)
             if abs(i - j) <= max_distort]
    pair = _pick(tf.range(len(pairs)), pair_seed)
    crop_height = tf.gather(sides, tf.gather([i for i, _ in pairs], pair))
    crop_width = tf.gather(sides, tf.gather([j for _, j in pairs], pair))
    offsets = tsn_offsets(image_height, image_width, crop_height, crop_width)
    corner = tf.gather(offsets, _pick(tf.range(13), offset_seed))
    return tf.stack([corner[0], corner[1], crop_height, crop_width])


def to_uint8(images):
    """Rounds float pixel values to uint8, clipping to [0, 255]."""
    return tf.cast(tf.clip_by_value(tf.round(images), 0.0, 255.0), tf.uint8)


def resize_uint8(images, height, width):
    """Bilinear resize of uint8 (..., h, w, 3) to (..., height, width, 3) uint8.

    No antialiasing: training crops are resized by factors near 1 (168 to 256 pixels of a
    256-pixel shorter side to 224), where PIL's antialiased bilinear (the official loader's)
    differs by under half a grey level on average, and antialiasing costs twice the time.
    Bilinear output stays within [0, 255], so adding 0.5 and truncating rounds it. The input is
    cast to float first: the same values, but TF's 3-channel kernel loads float pixels as one
    vector instead of three scalars, which makes the resize 1.5x faster.
    """
    resized = tf.image.resize(tf.cast(images, tf.float32), [height, width])
    return tf.cast(resized + 0.5, tf.uint8)


def _decode_image(image):
    """uint8 (h, w, 3) of a PNG, BMP or GIF (its first frame), or of a JPEG with TF's default IDCT."""
    return tf.io.decode_image(image, channels=3, expand_animations=False)


def frame_windows(shapes, window):
    """int32 (n, 4) windows [y, x, h, w], one per frame: `window`, drawn on the first frame, on
    each frame of int32 `shapes` (n, 2 or 3): the same window on a frame of the first's size, the
    same part of the picture on a frame of another size (a video whose resolution changes)."""
    sizes = shapes[:, :2]
    scale = tf.cast(sizes, tf.float64) / tf.cast(sizes[0], tf.float64)
    corner = tf.cast(tf.floor(tf.cast(window[:2], tf.float64) * scale), tf.int32)
    extent = tf.cast(tf.round(tf.cast(window[2:], tf.float64) * scale), tf.int32)
    return tf.concat([corner, tf.clip_by_value(extent, 1, sizes - corner)], axis=1)


def _decode_windows(jpegs, windows):
    """Each JPEG's window [y, x, h, w] (a row of `windows`), decoded: a list of uint8 (h, w, 3).

    libjpeg starts a crop only at a multiple of its block width (16 columns for 4:2:0 frames, 8
    for 4:4:4); for any other x, TF copies each decoded row to drop the columns before x. Decoding
    from the multiple of 16 at or below x and cutting those columns off in one slice costs less.
    """
    extra = windows[:, 1] % 16
    wide = windows - tf.stack([tf.zeros_like(extra), extra, tf.zeros_like(extra), -extra], axis=1)
    begin = tf.stack([tf.zeros_like(extra), extra], axis=1)
    end = tf.stack([windows[:, 2], extra + windows[:, 3]], axis=1)
    return [tf.strided_slice(tf.io.decode_and_crop_jpeg(jpeg, wide_i, channels=3), begin_i, end_i)
            for jpeg, wide_i, begin_i, end_i in zip(tf.unstack(jpegs), tf.unstack(wide), tf.unstack(begin),
                                                    tf.unstack(end))]


def _flip_clip(clip, flip):
    """(frames, h, w, 3) mirrored left-right when `flip` (a bool tensor), else as it is.

    The rows of all frames are reversed as one (frames * h, w, 3) tensor: TF's fast reverse
    kernel takes 3 dimensions (on 4 it is over twice as slow).
    """
    rows = tf.reshape(clip, [-1] + clip.shape[2:].as_list())
    return tf.cond(flip, lambda: tf.reshape(tf.reverse(rows, axis=[1]), tf.shape(clip)),
                   lambda: clip)


def decode_train_clip(frames, crop_size, scales, max_distort, seed, flip, jpeg=True):
    """Decodes one crop window of each frame: (frames,) string -> (frames, crop, crop, 3) uint8.

    The window is drawn on the first frame and cut from every frame (`frame_windows`); the clip
    is flipped horizontally when `flip` (a bool tensor). JPEG frames decode only their window;
    other formats (`jpeg` False) decode whole, then are cut.
    """
    window_of = lambda shape: train_crop_window(shape[0], shape[1], crop_size, scales, max_distort, seed)
    if jpeg:
        shapes = tf.stack([tf.io.extract_jpeg_shape(frame) for frame in tf.unstack(frames)])
        windows = _decode_windows(frames, frame_windows(shapes, window_of(shapes[0])))
    else:
        whole = [_decode_image(frame) for frame in tf.unstack(frames)]
        shapes = tf.stack([tf.shape(frame) for frame in whole])
        windows = [frame[w[0]:w[0] + w[2], w[1]:w[1] + w[3]]
                   for frame, w in zip(whole, tf.unstack(frame_windows(shapes, window_of(shapes[0]))))]
    return _flip_clip(tf.stack([resize_uint8(window, crop_size, crop_size) for window in windows]), flip)


def decode_frames(frames, jpeg=True):
    """(frames,) encoded frames -> a list of uint8 (h, w, 3), the pixels PIL decodes: JPEG with
    libjpeg's accurate IDCT, as PIL; other formats (`jpeg` False, lossless) with `tf.io.decode_image`."""
    decode = lambda frame: tf.io.decode_jpeg(frame, channels=3, dct_method="INTEGER_ACCURATE")
    return [decode(frame) if jpeg else _decode_image(frame) for frame in tf.unstack(frames)]


def eval_resize_side(crop_size, resize_to_crop):
    """Shorter side before the centre crop: crop_size, or int(crop_size / 0.875 + 0.5)."""
    return crop_size if resize_to_crop else int(crop_size / 0.875 + 0.5)


def resize_shorter_side(frames, side):
    """(frames, h, w, 3) uint8 -> shorter side = `side`, longer = int(side * long / short)."""
    height, width = tf.shape(frames)[1], tf.shape(frames)[2]
    scaled = lambda long, short: tf.cast(side * long / short, tf.int32)
    new_size = tf.cond(width < height, lambda: tf.stack([scaled(height, width), side]),
                       lambda: tf.stack([side, scaled(width, height)]))
    return to_uint8(tf.image.resize(frames, new_size, antialias=True))


def eval_view_corners(image_height, image_width, crop_size, num_crops):
    """int32 (count, 2) rows of (y, x): 1 centre, 3 along the long side, or 5 (10 with flips)."""
    if num_crops == 1:
        half_gap = lambda side: tf.cast(tf.round((side - crop_size) / 2), tf.int32)
        return tf.stack([tf.stack([half_gap(image_height), half_gap(image_width)])])
    if num_crops == 3:
        y_step = (image_height - crop_size) // 4
        x_step = (image_width - crop_size) // 4
        along_height = [[0, 2 * x_step], [4 * y_step, 2 * x_step], [2 * y_step, 2 * x_step]]
        along_width = [[2 * y_step, 0], [2 * y_step, 4 * x_step], [2 * y_step, 2 * x_step]]
        return tf.cond(image_width < image_height, lambda: tf.stack(along_height),
                       lambda: tf.stack(along_width))
    if num_crops == 10:
        return tsn_offsets(image_height, image_width, crop_size, crop_size, more_fix_crop=False)
    raise ValueError(f"config.data.num_crops={num_crops}: use 1, 3 or 10.")


def eval_views(frames, crop_size, resize_side, num_crops):
    """A list of uint8 (h, w, 3) frames -> (num_crops, frames, crop, crop, 3) uint8, official test views.

    Each frame is resized and cut on its own, as the official loader does: a video whose
    resolution changes gives the same views as one resized to a single resolution first.
    Order: 1 = centre; 3 = top/bottom/centre or left/right/centre; 10 = each of upper-left,
    upper-right, lower-left, lower-right and centre followed by its horizontal flip.
    """
    per_frame = []
    for frame in frames:
        frame = resize_shorter_side(frame[None], resize_side)[0]
        corners = eval_view_corners(tf.shape(frame)[0], tf.shape(frame)[1], crop_size, num_crops)
        views = []
        for i in range(corners.shape[0]):
            views.append(frame[corners[i, 0]:corners[i, 0] + crop_size, corners[i, 1]:corners[i, 1] + crop_size])
            if num_crops == 10:
                views.append(tf.reverse(views[-1], axis=[1]))
        per_frame.append(tf.stack(views))
    return tf.stack(per_frame, axis=1)
