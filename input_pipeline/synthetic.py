"""A generated dataset whose classes differ only in frame order, written as frame folders.

Classes come in pairs, the second of each pair being the first played backwards: moving right /
left, down / up, growing / shrinking, rotating clockwise / anticlockwise, brightening /
darkening. Every video of class 2p+1 is a video drawn exactly like those of class 2p, reversed,
so the set of frames is the same for both: a model blind to frame order sits at chance within a
pair. Each video varies its length, background colour and noise, object colour, shape, size,
position and speed. Output layout (the `frames` source):

  <dir>/frames/<split>/<label>_<n>/00001.jpg ...   one folder per video
  <dir>/train.txt, <dir>/val.txt                   `<video dir> 1 <frames> <label>` lines
  <dir>/classes.txt                                one class name per line
"""
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

CLASS_NAMES = ("moving right", "moving left", "moving down", "moving up", "growing",
               "shrinking", "rotating clockwise", "rotating anticlockwise", "brightening",
               "darkening")
_DONE_FILE = "done.json"
# Part of the settings a dataset is cached under: bump it when the drawing changes.
GENERATOR_VERSION = 2


def _object_mask(yy, xx, shape, centre, size, angle):
    """Bool (h, w) mask: a disk or square of half-size `size`, or a clock hand at `angle`."""
    dy, dx = yy - centre[0], xx - centre[1]
    if shape == "disk":
        return dy**2 + dx**2 <= size**2
    if shape == "square":
        return (np.abs(dy) <= size) & (np.abs(dx) <= size)
    along = dx * np.cos(angle) + dy * np.sin(angle)
    across = -dx * np.sin(angle) + dy * np.cos(angle)
    tip = (along - size) ** 2 + across ** 2 <= 16
    return ((along >= -2) & (along <= size) & (np.abs(across) <= 3)) | (dy**2 + dx**2 <= 9) | tip


def _forward_video(kind, num_frames, height, width, rng):
    """(num_frames, height, width, 3) uint8 of one motion `kind` played forwards."""
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    background = rng.uniform(0, 110, 3)
    colour = rng.uniform(150, 255, 3)
    noise = rng.uniform(4, 16)
    shorter = min(height, width)
    size = rng.uniform(0.07, 0.13) * shorter
    t = np.arange(num_frames, dtype=np.float32)
    shape = rng.choice(["disk", "square"])
    centre = np.stack([np.full(num_frames, rng.uniform(0.3, 0.7) * height),
                       np.full(num_frames, rng.uniform(0.3, 0.7) * width)], axis=1)
    sizes = np.full(num_frames, size)
    angles = np.zeros(num_frames)
    brightness = np.ones(num_frames)
    if kind in (0, 1):  # 0: left to right (x grows), 1: top to bottom (y grows).
        side = (width, height)[kind]
        travel = min(rng.uniform(1.5, 3.0) * (num_frames - 1), side - 2 * size - 5)
        start = rng.uniform(size + 2, side - size - 2 - travel)
        centre[:, 1 - kind] = start + travel * t / (num_frames - 1)
    elif kind == 2:  # Growing.
        sizes = (rng.uniform(0.03, 0.07) + rng.uniform(0.2, 0.38) * t / (num_frames - 1)) * shorter
    elif kind == 3:  # Clockwise on screen (y points down).
        shape = "hand"
        sizes = np.full(num_frames, rng.uniform(0.2, 0.45) * shorter)
        angles = rng.uniform(0, 2 * np.pi) + rng.uniform(0.1, 0.2) * t
    else:  # Brightening.
        brightness = rng.uniform(0.1, 0.3) + rng.uniform(0.6, 0.9) * t / (num_frames - 1)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for i in range(num_frames):
        mask = _object_mask(yy, xx, shape, centre[i], sizes[i], angles[i])[..., None]
        image = np.where(mask, background + brightness[i] * (colour - background), background)
        image = image + rng.normal(0, noise, image.shape)
        frames[i] = np.clip(np.round(image), 0, 255)
    return frames


def render_video(label, num_frames, height, width, rng):
    """(num_frames, height, width, 3) uint8 video of class `label` (odd labels play backwards)."""
    frames = _forward_video(label // 2, num_frames, height, width, rng)
    return frames[::-1] if label % 2 else frames


def _write_split(out_dir, split, videos_per_class, config):
    """Writes the frame folders of one split and returns its list-file lines."""
    lines = []
    split_id = {"train": 0, "val": 1}[split]
    for label in range(config.num_classes):
        for number in range(videos_per_class):
            rng = np.random.default_rng([config.seed, split_id, label, number])
            num_frames = int(rng.integers(config.min_video_frames, config.max_video_frames + 1))
            video = render_video(label, num_frames, config.frame_height, config.frame_width, rng)
            video_dir = os.path.join("frames", split, f"{label:02d}_{number:04d}")
            os.makedirs(os.path.join(out_dir, video_dir))
            for index, frame in enumerate(video, start=1):
                Image.fromarray(frame).save(os.path.join(out_dir, video_dir, f"{index:05d}.jpg"),
                                            quality=90)
            lines.append(f"{video_dir} 1 {num_frames} {label}\n")
    return lines


def write_synthetic_dataset(out_dir, config):
    """Writes the dataset described by `config` (a data.synthetic ConfigDict) into a new `out_dir`.

    The same config writes the same files. Returns the paths as `dataset_paths` does.
    """
    if config.num_classes % 2 or not 2 <= config.num_classes <= len(CLASS_NAMES):
        raise ValueError(f"config.data.synthetic.num_classes={config.num_classes}: use an even "
                         f"number from 2 to {len(CLASS_NAMES)}.")
    os.makedirs(out_dir)
    for split, count in (("train", config.train_videos_per_class),
                         ("val", config.val_videos_per_class)):
        with open(os.path.join(out_dir, f"{split}.txt"), "w") as f:
            f.writelines(_write_split(out_dir, split, count, config))
    with open(os.path.join(out_dir, "classes.txt"), "w") as f:
        f.writelines(name + "\n" for name in CLASS_NAMES[:config.num_classes])
    with open(os.path.join(out_dir, _DONE_FILE), "w") as f:
        json.dump(_settings(config), f, sort_keys=True)
    return dataset_paths(out_dir)


def dataset_paths(out_dir):
    """The root, list files and class-name file of a dataset written in `out_dir`."""
    return {"root": out_dir, "train_list": os.path.join(out_dir, "train.txt"),
            "val_list": os.path.join(out_dir, "val.txt"),
            "class_names_file": os.path.join(out_dir, "classes.txt")}


def _settings(config):
    """What identifies a written dataset: the generator version and the synthetic settings."""
    return dict(config.to_dict(), generator_version=GENERATOR_VERSION)


def default_cache_dir(config):
    """A folder under the system temp dir named after the synthetic settings."""
    settings = json.dumps(_settings(config), sort_keys=True)
    digest = hashlib.sha256(settings.encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), "blvnet_jax_synthetic", digest)


def ensure_synthetic_dataset(out_dir, config):
    """Returns the dataset paths in `out_dir`, writing the dataset first if it is not complete.

    A finished dataset whose settings differ from `config` is an error (pick another folder).
    Concurrent writers are safe: each writes a private folder, the first rename wins.
    """
    done_file = os.path.join(out_dir, _DONE_FILE)
    if not os.path.exists(done_file):
        os.makedirs(os.path.dirname(os.path.abspath(out_dir)), exist_ok=True)
        scratch = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(out_dir)))
        write_synthetic_dataset(os.path.join(scratch, "dataset"), config)
        try:
            os.rename(os.path.join(scratch, "dataset"), out_dir)
        except OSError:
            if not os.path.exists(done_file):
                raise
        shutil.rmtree(scratch)
    with open(done_file) as f:
        if json.load(f) != json.loads(json.dumps(_settings(config), sort_keys=True)):
            raise ValueError(f"{out_dir} holds a synthetic dataset with other settings than "
                             "config.data.synthetic; set config.data.root to another folder.")
    return dataset_paths(out_dir)
