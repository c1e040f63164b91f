"""Clips per second per core of training decode + augmentation, ours against the official loader.

    python -m benchmarks.input_speed [--cores=1] [--seconds=10] [--rounds=3] \
        [--video_frames=48] [--batch_size=8] [--json] [--readme]

Writes its own data to a temporary folder: `--videos` videos of `--video_frames` frames of
340x256 JPEG at quality 90 (the official frame-folder format), as frame folders, and the same
folders as a Something-Something V1 manual download prepared into the stored format
(`tfds_builders.build('something_something_v1', ...)`: ArrayRecord files of one record per
frame, the JPEG files stored as they are, so both sources decode the same bytes). Each
measurement makes 16-frame clips at 224x224 for training (multi-scale crop, flip) and runs in its
own process, pinned to `--cores` CPUs, alternating sources round by round; a figure is the median
of `--rounds` runs of `--seconds` each after warm-up:
- frames: `create_train_dataset` on the frame folders, batches of uint8 clips out (cropped,
  resized and flipped);
- tfds: the same on the prepared dataset (`data.source='tfds'`), which reads a clip's 16 records
  whatever the video's length;
- PIL baseline: the official loader's training clip, step by step as its code takes them, in
  one Python process with torch on 1 thread (as in a DataLoader worker): per frame
  `Image.open`, `copy()` (the decode) and close; TSN's GroupMultiScaleCrop (the same scales,
  aspect jitter and 13 corners) and bilinear resize; the flip; the frames stacked along the
  channels, then torch's permute + contiguous, float, divide by 255, and the per-channel
  in-place ImageNet normalisation (48 channels); `--batch_size` clips stacked as its collate;
- PIL, numpy tensor steps: the same PIL work with the tensor steps in vectorised numpy (one
  normalisation over the stack), a loader faster than the official one.
Every source makes batches of `--batch_size` clips. The baseline needs torch
(`requirements-test.txt`). 'x PIL' is the ratio of the medians; 'x PIL/round' the median of
each round's ratio, which cancels more of a load that drifts between rounds.
"""
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
from PIL import Image

from benchmarks import report
from configs import data_defaults
import input_pipeline
from input_pipeline.sources import create_source
from input_pipeline import tfds_builders

FLAGS = flags.FLAGS
SOURCES = ("frames", "tfds", "pil", "pil_numpy")
NAMES = {"frames": "frames", "tfds": "tfds (stored format)", "pil": "PIL baseline (official steps)",
         "pil_numpy": "PIL, numpy tensor steps"}
NUM_FRAMES = 16
CROP_SIZE = 224
SCALES = (1.0, 0.875, 0.75, 0.66)
_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)


def textured_video(rng, num_frames, height, width):
    """uint8 (num_frames, height, width, 3): a smooth random scene panning sideways, plus noise.

    Its JPEGs at quality 90 weigh about what real 340x256 frames do (about 20 kB).
    """
    scene = Image.fromarray(rng.integers(0, 255, (16, 24, 3), np.uint8))
    scene = np.asarray(scene.resize((width + 64, height), Image.BICUBIC), np.float32)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        shift = (2 * t) % 64
        noisy = scene[:, shift:shift + width] + rng.normal(0, 3, (height, width, 3))
        frames[t] = np.clip(noisy, 0, 255)
    return frames


TFDS_NAME = "something_something_v1"
CLASSES = [f"class{label}" for label in range(4)]


def write_data(out_dir, num_videos, video_frames):
    """Writes frame folders `frames/video000/00001.jpg ...` + `train.txt`, and the same folders as a
    something_something_v1 manual download (`manual/`, its frame folder a link to `frames/`)
    prepared into the stored format in `tfds/`."""
    rng = np.random.default_rng(0)
    lines, split = [], []
    for number in range(num_videos):
        video_dir = f"video{number:03d}"
        os.makedirs(os.path.join(out_dir, "frames", video_dir))
        for index, frame in enumerate(textured_video(rng, video_frames, 256, 340), start=1):
            Image.fromarray(frame).save(os.path.join(out_dir, "frames", video_dir, f"{index:05d}.jpg"), quality=90)
        lines.append(f"{video_dir} 1 {video_frames} {number % 4}\n")
        split.append(f"{video_dir};{CLASSES[number % 4]}\n")
    with open(os.path.join(out_dir, "train.txt"), "w") as f:
        f.writelines(lines)
    manual = os.path.join(out_dir, "manual")
    os.makedirs(manual)
    os.symlink(os.path.join(out_dir, "frames"), os.path.join(manual, tfds_builders.SomethingSomethingV1.VIDEO_FOLDER))
    with open(os.path.join(manual, "something-something-v1-labels.csv"), "w") as f:
        f.writelines(name + "\n" for name in CLASSES)
    with open(os.path.join(manual, "something-something-v1-train.csv"), "w") as f:
        f.writelines(split)
    tfds_builders.build(TFDS_NAME, manual, os.path.join(out_dir, "tfds"))


def _tsn_crop(image_width, image_height):
    """TSN's GroupMultiScaleCrop draw: (x, y, crop width, crop height)."""
    crop_sizes = [int(min(image_width, image_height) * scale) for scale in SCALES]
    crop_sizes = [CROP_SIZE if abs(size - CROP_SIZE) < 3 else size for size in crop_sizes]
    pairs = [(w, h) for i, h in enumerate(crop_sizes) for j, w in enumerate(crop_sizes)
             if abs(i - j) <= 1]
    crop_width, crop_height = random.choice(pairs)
    w_step, h_step = (image_width - crop_width) // 4, (image_height - crop_height) // 4
    grid = [(0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0), (1, 1),
            (3, 1), (1, 3), (3, 3)]
    x, y = random.choice(grid)
    return x * w_step, y * h_step, crop_width, crop_height


def pil_frames(paths, crop, flip):
    """The official loader's PIL work on one clip: uint8 (224, 224, frames * 3), the frames'
    RGB stacked along the channels. `crop(image_width, image_height)` gives the (x, y, width,
    height) of the window, the same for all frames."""
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.copy())
    x, y, width, height = crop(*images[0].size)
    images = [image.crop((x, y, x + width, y + height)).resize((CROP_SIZE, CROP_SIZE),
                                                               Image.BILINEAR)
              for image in images]
    if flip:
        images = [image.transpose(Image.FLIP_LEFT_RIGHT) for image in images]
    return np.concatenate(images, axis=2)


def pil_clip(paths, crop, flip):
    """The official loader's training clip: float32 torch tensor (frames * 3, 224, 224), the
    tensor steps as its code takes them (permute, float, / 255, then channel by channel)."""
    import torch  # noqa: PLC0415 - only the baseline's process needs torch.

    tensor = torch.from_numpy(pil_frames(paths, crop, flip)).permute(2, 0, 1).contiguous()
    tensor = tensor.float().div(255)
    for channel, mean, std in zip(tensor, np.tile(_MEAN, len(paths)).tolist(),
                                  np.tile(_STD, len(paths)).tolist()):
        channel.sub_(mean).div_(std)
    return tensor


def pil_numpy_clip(paths, crop, flip):
    """`pil_clip`'s values with the tensor steps in vectorised numpy: float32 (frames * 3, 224,
    224)."""
    tensor = pil_frames(paths, crop, flip).transpose(2, 0, 1).astype(np.float32) / 255.0
    mean, std = np.tile(_MEAN, len(paths)), np.tile(_STD, len(paths))
    return (tensor - mean[:, None, None]) / std[:, None, None]


def _pil_batches(source, data_dir, video_frames, batch_size):
    """Endless batches of PIL clips of uniformly sampled frames (the official TSN sampling),
    stacked as the official collate does; yields the clip count of each batch."""
    if source == "pil":
        import torch  # noqa: PLC0415 - only the baseline's process needs torch.

        torch.set_num_threads(1)
        make_clip, stack = pil_clip, torch.stack
    else:
        make_clip, stack = pil_numpy_clip, np.stack
    videos = sorted(os.listdir(os.path.join(data_dir, "frames")))
    segment = video_frames // NUM_FRAMES
    while True:
        clips = []
        for _ in range(batch_size):
            video = random.choice(videos)
            offset = random.randrange(segment)
            paths = [os.path.join(data_dir, "frames", video, f"{1 + k * segment + offset:05d}.jpg")
                     for k in range(NUM_FRAMES)]
            clips.append(make_clip(paths, _tsn_crop, random.random() < 0.5))
        stack(clips)
        yield batch_size


def pipeline_config(source, data_dir):
    """`config.data` of our training pipeline on the data of `write_data`: 'frames' or 'tfds'."""
    config = data_defaults.get_data_config()
    config.update(source=source, crop_size=CROP_SIZE, flip=True)
    if source == "frames":
        config.update(root=os.path.join(data_dir, "frames"),
                      train_list=os.path.join(data_dir, "train.txt"))
    else:
        config.update(tfds_name=TFDS_NAME, tfds_data_dir=os.path.join(data_dir, "tfds"))
    return config


def _pipeline_clips(source, data_dir, batch_size):
    """Endless uint8 batches of our training pipeline; yields the clip count of each batch."""
    config = pipeline_config(source, data_dir)
    for batch in input_pipeline.create_train_dataset(create_source(config), num_frames=NUM_FRAMES,
                                                     global_batch_size=batch_size, seed=0):
        yield batch["video"].shape[0]


def measure(source, data_dir, video_frames, seconds, batch_size):
    """Clips per second of one source in this process, after a warm-up of 2 batches."""
    if source.startswith("pil"):
        clips = _pil_batches(source, data_dir, video_frames, batch_size)
    else:
        clips = _pipeline_clips(source, data_dir, batch_size)
    for _ in range(2):
        next(clips)
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        count += next(clips)
    return count / (time.perf_counter() - start)


def _run_measurement(source, data_dir):
    """Runs `measure` in a fresh process pinned to the first `--cores` CPUs; clips/s."""
    cpus = sorted(os.sched_getaffinity(0))[:FLAGS.cores]
    command = [sys.executable, "-m", "benchmarks.input_speed", f"--measure={source}",
               f"--data_dir={data_dir}", f"--seconds={FLAGS.seconds}",
               f"--video_frames={FLAGS.video_frames}", f"--batch_size={FLAGS.batch_size}",
               f"--cpus={','.join(map(str, cpus))}"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"Measuring {source} failed:\n{result.stderr[-3000:]}")
    return float(result.stdout.strip().splitlines()[-1])


def run_all():
    """{source: clips/s per core} medians over rounds, with the per-round figures and the median
    of the per-round ratios to PIL."""
    rounds = {source: [] for source in SOURCES}
    with tempfile.TemporaryDirectory() as data_dir:
        write_data(data_dir, FLAGS.videos, FLAGS.video_frames)
        for _ in range(FLAGS.rounds):
            for source in SOURCES:
                cores = 1 if source.startswith("pil") else FLAGS.cores
                rounds[source].append(_run_measurement(source, data_dir) / cores)
    return {source: {"clips_per_s_per_core": statistics.median(values), "rounds": values,
                     "x_pil_per_round": statistics.median(
                         rate / pil for rate, pil in zip(values, rounds["pil"]))}
            for source, values in rounds.items()}


def main(argv):
    del argv
    if FLAGS.measure:
        os.sched_setaffinity(0, [int(cpu) for cpu in FLAGS.cpus])
        print(measure(FLAGS.measure, FLAGS.data_dir, FLAGS.video_frames, FLAGS.seconds,
                      FLAGS.batch_size), flush=True)
        # The figure is out; a normal exit can hang while tf.data threads still run.
        os._exit(0)
    start_load = os.getloadavg()[0]
    results = run_all()
    baseline = results["pil"]["clips_per_s_per_core"]
    lines = ["| source | clips/s/core | x PIL | x PIL, median of per-round ratios |", "|---|---|---|---|"]
    for source in SOURCES:
        rate = results[source]["clips_per_s_per_core"]
        per_round = results[source]["x_pil_per_round"]
        lines.append(f"| {NAMES[source]} | {rate:.1f} | {rate / baseline:.2f} | {per_round:.2f} |")
    table = "\n".join(lines)
    print(f"16-frame clips at {CROP_SIZE} from 340x256 q90 JPEG, {FLAGS.cores} core(s) for "
          f"tf.data, 1 for PIL, median of {FLAGS.rounds} x {FLAGS.seconds} s\n{table}")
    if FLAGS.readme:
        command = " ".join(["python -m benchmarks.input_speed"] + sys.argv[1:])
        report.update_readme("input_benchmark", (
            f"`{command}` on {report.machine()}: 16-frame training clips at {CROP_SIZE} from 340x256 JPEG "
            f"(q90), batches of {FLAGS.batch_size}, tf.data pinned to {FLAGS.cores} core(s), the PIL loaders in one "
            f"process (torch on 1 thread), median of {FLAGS.rounds} "
            f"runs of {FLAGS.seconds} s; load average {start_load:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end:\n\n{table}"))
    if FLAGS.json:
        print(json.dumps({"cores": FLAGS.cores, "results": results}))


if __name__ == "__main__":
    # Flags are defined only when run as a program, so importing this module defines none.
    flags.DEFINE_integer("cores", 1, "CPUs the tf.data measurements are pinned to.")
    flags.DEFINE_integer("seconds", 10, "Length of one timed run.")
    flags.DEFINE_integer("rounds", 3, "Runs per source; the median is reported.")
    flags.DEFINE_integer("videos", 24, "Generated videos.")
    flags.DEFINE_integer("video_frames", 48, "Frames per generated video.")
    flags.DEFINE_integer("batch_size", 8, "Clips per batch of the tf.data pipelines.")
    flags.DEFINE_bool("json", False, "Also print the results as one JSON line.")
    flags.DEFINE_bool("readme", False, "Also write the table into the README's input pipeline section.")
    flags.DEFINE_string("measure", None, "Internal: measure this source in this process.")
    flags.DEFINE_string("data_dir", None, "Internal: the generated data.")
    flags.DEFINE_list("cpus", [], "Internal: the CPUs to pin this process to.")
    app.run(main)
