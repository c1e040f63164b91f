"""Class probabilities, timelines and features of videos, from a trained or converted checkpoint.

    python -m blvnet_jax.predict --workdir=DIR --video=FILE_OR_FRAME_FOLDER [--top_k=5] [--save_png=OUT.png]
    python -m blvnet_jax.predict --workdir=DIR --video=FOLDER_OF_VIDEOS --output_csv=OUT.csv [--features=DIR]
    python -m blvnet_jax.predict --workdir=DIR --video_list=LIST.txt --output_csv=OUT.csv
    python -m blvnet_jax.predict --workdir=DIR --video=LONG.mp4 --window_seconds=4 --stride_seconds=2 \\
        --output_csv=timeline.csv --save_png=timeline.png
    (all take --checkpoint=latest|best|STEP, --num_clips, --num_crops, --batch_videos, --workers)

In Python (load once, classify many):

    predictor = Predictor("runs/ssv1_8x2")
    predictor.classify("a.mp4").top                      # [(class name, probability)] * top_k
    for result in predictor.classify_many(paths):        # batched, decoded in parallel, in order
        print(result.path, result.error or result.top[0])
    predictor.timeline("long.mp4", window_seconds=4, stride_seconds=2).probabilities  # (windows, classes)
    predictor.features("a.mp4")                          # (num_features,) pooled backbone features

A video goes through the evaluation sampling and transforms of the checkpoint's config (its
crops x clips, or `num_clips`/`num_crops` given here); the softmax is averaged over the views, as
in evaluation. Only the sampled frames are decoded into memory (`input_pipeline.single_video`).
"""
import collections
import concurrent.futures
import csv
import dataclasses
import os
import queue
import sys
import threading
from typing import Iterable, Iterator

import jax
import ml_collections
import numpy as np
from absl import app, flags
from etils import epath
from flax import nnx

from blvnet_jax import checkpoint, cli, config_check, evaluation, quiet, steps
from blvnet_jax.checkpoint import restore_model
from input_pipeline import single_video, video_files

# What makes one video of a batch run fail (reported, and the run goes on).
VIDEO_ERRORS = (single_video.UnreadableVideoError, FileNotFoundError)


@dataclasses.dataclass
class Prediction:
    """One video's result. `probabilities` float64 `(classes,)` and `features` float32
    `(num_features,)` are averaged over the views; `indices` int64 `(clips, frames)` are the sampled
    frames; `views` uint8 `(views, frames, crop, crop, 3)` (from `classify` only); `error` names why
    a video of `classify_many` gave no result (the other fields are then None)."""
    path: str
    top: list[tuple[str, float]] | None = None
    probabilities: np.ndarray | None = None
    features: np.ndarray | None = None
    indices: np.ndarray | None = None
    views: np.ndarray | None = None
    error: str | None = None


@dataclasses.dataclass
class Timeline:
    """Per-window results of a long video: `frames` int64 `(windows, 2)` [start, end) frame ranges,
    `seconds` float64 `(windows, 2)` the same in seconds, `probabilities` float64 `(windows, classes)`."""
    path: str
    fps: float
    frames: np.ndarray
    seconds: np.ndarray
    probabilities: np.ndarray
    class_names: list[str]

    def top(self, k: int) -> list[list[tuple[str, float]]]:
        """The `k` most probable classes of each window, with their probabilities."""
        return [ranked(row, self.class_names, k) for row in self.probabilities]


def ranked(probabilities: np.ndarray, names: list[str], k: int) -> list[tuple[str, float]]:
    return [(names[c], float(probabilities[c])) for c in np.argsort(-probabilities, kind="stable")[:k]]


def make_forward(graphdef: nnx.GraphDef):
    """`forward(params, batch_stats, video) -> (features, logits)` in eval mode: video uint8 `(views,
    frames, crop, crop, 3)`; features float32 `(views, num_features)` are
    `models.VideoClassifier.features`, which the head classifies; logits float32 `(views, classes)`,
    those of `steps.make_eval_step`."""

    def forward(params, batch_stats, video):
        model = nnx.merge(graphdef, params, batch_stats, copy=True)
        model.eval()
        features = model.features(steps.normalize(video))
        return features, model.head(features)

    return forward


def in_background(items: Iterator, size: int) -> Iterator:
    """`items`, produced by a thread up to `size` ahead (decoding overlaps the device); an exception
    of the producer is raised here."""
    ready, stop, done = queue.Queue(size), threading.Event(), object()

    def produce():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ready.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put((done, None))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            ready.put((done, error))

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()


def batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class Predictor:
    """A checkpoint restored once and its forward pass jitted once, for many videos.

    `checkpoint`: 'latest' (the newest intact step), 'best' or a step number (`checkpoint.restore_model`).
    `num_clips`, `num_crops`: the evaluation views per video (or per window), default the config's.
    `batch_videos`: videos (or windows) per device batch; `workers`: decoding threads.
    """

    def __init__(self, workdir: str, checkpoint: int | str = "latest", num_clips: int | None = None,
                 num_crops: int | None = None, batch_videos: int = 8, workers: int = 2):
        model, metadata = restore_model(workdir, checkpoint)
        self.config = ml_collections.ConfigDict(metadata["config"])
        config_check.check_input_channels(self.config.model)
        self.config.data.num_clips = num_clips or self.config.data.num_clips
        self.config.data.num_crops = num_crops or self.config.data.num_crops
        self.step = metadata["step"]
        self.num_classes = self.config.model.num_classes
        self.class_names = metadata.get("class_names") or [str(i) for i in range(self.num_classes)]
        self.views_per_video = self.config.data.num_clips * self.config.data.num_crops
        self.batch_videos, self.workers = batch_videos, workers
        graphdef, self._params, self._batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
        self._forward = jax.jit(make_forward(graphdef))

    def views(self, path: str, stats: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`(views, indices)` of one video (`single_video.eval_views`)."""
        return single_video.eval_views(path, self.config.data, self.config.model.num_frames, stats)

    def run(self, views: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 `(n, frames, crop, crop, 3)`, n <= rows, padded to `rows` (one compiled shape per
        `rows`) -> (features float32 `(n, num_features)`, logits float64 `(n, classes)`)."""
        count = len(views)
        if count < rows:
            views = np.concatenate([views, np.zeros((rows - count,) + views.shape[1:], views.dtype)])
        features, logits = self._forward(self._params, self._batch_stats, views)
        return np.asarray(features)[:count], np.asarray(logits, np.float64)[:count]

    def _results(self, items: list[tuple[str, np.ndarray, np.ndarray]], top_k: int, rows: int,
                 keep_views: bool) -> list[Prediction]:
        """Predictions of `(path, views, indices)` items, run as one batch."""
        features, logits = self.run(np.concatenate([views for _, views, _ in items]), rows)
        probabilities = evaluation.average_views(logits, self.views_per_video)
        features = features.reshape(len(items), self.views_per_video, -1).mean(axis=1)
        return [Prediction(path, ranked(p, self.class_names, top_k), p, f, indices, views if keep_views else None)
                for (path, views, indices), p, f in zip(items, probabilities, features)]

    def classify(self, path: str, top_k: int = 5) -> Prediction:
        """One video file or frame folder; raises `single_video.UnreadableVideoError` or
        `FileNotFoundError` (naming the path) when it cannot be read."""
        views, indices = self.views(path)
        return self._results([(path, views, indices)], top_k, self.views_per_video, keep_views=True)[0]

    def features(self, path: str) -> np.ndarray:
        """float32 `(num_features,)`: the backbone's pooled features (what the head classifies),
        averaged over the views."""
        return self.classify(path).features

    def classify_many(self, paths: Iterable[str], top_k: int = 5) -> Iterator[Prediction]:
        """Predictions of `paths`, in their order, `batch_videos` videos per device batch while
        `workers` threads decode the next ones. A video that cannot be read gives a Prediction with
        `error` set, and the others go on."""
        rows = self.batch_videos * self.views_per_video

        def decoded(path):
            try:
                return self.views(path), None
            except VIDEO_ERRORS as error:
                return None, str(error)

        with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
            chunks = batches(paths, self.batch_videos)
            pending = collections.deque()
            for chunk in chunks:  # two chunks decode ahead of the one on the device
                pending.append([(path, pool.submit(decoded, path)) for path in chunk])
                if len(pending) < 3:
                    continue
                yield from self._chunk_results(pending.popleft(), top_k, rows)
            while pending:
                yield from self._chunk_results(pending.popleft(), top_k, rows)

    def _chunk_results(self, chunk, top_k: int, rows: int) -> list[Prediction]:
        outcomes = [(path, *future.result()) for path, future in chunk]
        good = [(path, *views_indices) for path, views_indices, error in outcomes if error is None]
        results = iter(self._results(good, top_k, rows, keep_views=False) if good else [])
        return [next(results) if error is None else Prediction(path, error=error) for path, _, error in outcomes]

    def timeline(self, path: str, window_seconds: float, stride_seconds: float | None = None,
                 fps: float | None = None) -> Timeline:
        """Sliding windows over a video (`single_video.windows`), each classified like a video: one
        decoding pass keeps only the windows' sampled frames, `batch_videos` windows per batch.
        `stride_seconds` defaults to `window_seconds`; `fps` is needed for a frame folder only."""
        stride_seconds = stride_seconds or window_seconds
        info = single_video.probe(path)
        fps = fps or info.fps
        if not fps:
            raise single_video.UnreadableVideoError(f"{path}: its frame rate is unknown (a frame folder): give fps")
        frame_count, rows = info.frame_count, self.batch_videos * self.views_per_video
        for _ in range(2):
            ranges = single_video.windows(frame_count, fps, window_seconds, stride_seconds)
            requests = single_video.window_requests(self.config.data, ranges, self.config.model.num_frames)
            probabilities = np.zeros((len(ranges), self.num_classes))
            clips = single_video.sampled_clips(path, requests, single_video.eval_resize_side(self.config.data),
                                               frame_count)
            views = ((number, single_video.views_of(window, self.config.data)) for number, window in clips)
            try:
                for batch in batches(in_background(views, 2 * self.batch_videos), self.batch_videos):
                    _, logits = self.run(np.concatenate([v for _, v in batch]), rows)
                    probabilities[[n for n, _ in batch]] = evaluation.average_views(logits, self.views_per_video)
            except single_video.FrameCountError as error:
                frame_count = error.actual
                continue
            return Timeline(path, fps, ranges, ranges / fps, probabilities, self.class_names)
        raise single_video.UnreadableVideoError(f"{path}: its frame count changes between two decodings")


def predict(workdir: str, video_path: str, top_k: int = 5, step: int | str = "latest") -> dict:
    """`{'top': [(class name, probability)], 'views' uint8, 'indices', 'step'}` for one video, by the
    checkpoint `step`: `Predictor(workdir, step).classify` as a dict (restores the model each call)."""
    predictor = Predictor(workdir, step)
    result = predictor.classify(video_path, top_k)
    return {"top": result.top, "views": result.views, "indices": result.indices, "step": predictor.step}


def save_png(path: str, result, video_path: str) -> None:
    """The first view's sampled frames in a row, and the top-k probabilities as bars (`result`: a
    `Prediction` or `predict`'s dict; `path` may be a URL)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    result = result if isinstance(result, dict) else dataclasses.asdict(result)
    frames = result["views"][0]
    figure = plt.figure(figsize=(max(8, 1.2 * len(frames)), 4.5))
    grid = figure.add_gridspec(2, len(frames), height_ratios=(1, 1.2))
    for i, frame in enumerate(frames):
        axes = figure.add_subplot(grid[0, i])
        axes.imshow(frame)
        axes.set_title(f"#{result['indices'][0][i]}", fontsize=8)
        axes.axis("off")
    bars = figure.add_subplot(grid[1, :])
    names, probabilities = zip(*result["top"])
    bars.barh(range(len(names))[::-1], probabilities)
    bars.set_yticks(range(len(names))[::-1], names)
    bars.set_xlim(0, 1)
    bars.set_xlabel("probability")
    figure.suptitle(video_path, fontsize=9)
    figure.tight_layout()
    _save_figure(figure, path)


def save_timeline_png(path: str, timeline: Timeline, classes: int = 5) -> None:
    """The probability of the `classes` classes most probable in some window, over time (a point per
    window, at its centre)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    centres = timeline.seconds.mean(axis=1)
    shown = np.argsort(-timeline.probabilities.max(axis=0), kind="stable")[:classes]
    figure, axes = plt.subplots(figsize=(10, 4))
    for c in shown:
        axes.plot(centres, timeline.probabilities[:, c], marker="." if len(centres) < 60 else None,
                  label=timeline.class_names[c])
    axes.set_ylim(0, 1)
    axes.set_xlim(0, max(timeline.seconds[-1, 1], 1e-3))
    axes.set_xlabel(f"seconds (window centre; windows of {timeline.seconds[0, 1] - timeline.seconds[0, 0]:.3g} s)")
    axes.set_ylabel("probability")
    axes.legend(loc="upper right", fontsize=8)
    axes.set_title(timeline.path, fontsize=9)
    figure.tight_layout()
    _save_figure(figure, path)


def _save_figure(figure, path: str) -> None:
    import matplotlib.pyplot as plt
    with epath.Path(path).open("wb") as f:
        figure.savefig(f, format="png", dpi=100)
    plt.close(figure)


def collect_videos(video: str | None, video_list: str | None) -> tuple[list[str], str]:
    """`(videos, root)`: `video` itself (a file or a frame folder), every video file and frame folder
    under a folder of videos (recursively, sorted), or the paths of `video_list` (one a line; blank
    lines and `#` comments skipped). `root` is the folder the features' file names are relative to.
    Raises ValueError / FileNotFoundError with a user's message."""
    if video_list:
        if not os.path.isfile(video_list):
            raise FileNotFoundError(f"--video_list={video_list}: no such file")
        with open(video_list, encoding="utf-8-sig") as f:
            paths = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
        if not paths:
            raise ValueError(f"--video_list={video_list} lists no video")
        return paths, os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    if not os.path.exists(video):
        raise FileNotFoundError(f"--video={video}: no such file or folder")
    if os.path.isfile(video) or video_files.frame_files(video):
        return [video], os.path.dirname(os.path.abspath(video))
    paths, _ = video_files.find_videos(video)
    if not paths:
        raise ValueError(f"--video={video}: no video in the folder (looked for "
                         f"{', '.join(video_files.VIDEO_EXTENSIONS)} files and folders of "
                         f"{', '.join(video_files.FRAME_EXTENSIONS)} frames)")
    return paths, os.path.abspath(video)


def features_file(directory: str, video: str, root: str) -> str:
    """`{directory}/{video relative to root, extension replaced by .npy}`."""
    relative = os.path.relpath(os.path.abspath(video), root)
    stem = os.path.splitext(relative)[0] if os.path.isfile(video) else relative
    return os.path.join(directory, stem + ".npy")


def top_columns(top_k: int) -> list[str]:
    return [name for k in range(1, top_k + 1) for name in (f"top{k}", f"p{k}")]


def top_cells(top: list[tuple[str, float]] | None, top_k: int) -> list:
    cells = [cell for name, p in (top or []) for cell in (name, f"{p:.6f}")]
    return cells + [""] * (2 * top_k - len(cells))


FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when this module runs as a program."""
    flags.DEFINE_string("workdir", None, "Workdir with checkpoints/ (trained, or written by blvnet_jax.convert).")
    flags.DEFINE_string("video", None, "A video file (anything PyAV decodes), a folder of frames, or a folder of "
                        "videos (every video file and frame folder inside, recursively).")
    flags.DEFINE_string("video_list", None, "A text file of video paths, one a line (instead of --video).")
    flags.DEFINE_integer("top_k", 5, "How many classes to print or write.")
    flags.DEFINE_string("output_csv", None, "CSV of the results: one row per video (video, top1, p1, ..., error), "
                        "or with --window_seconds one row per window.")
    flags.DEFINE_string("save_png", None, "One video: PNG of the sampled frames and the top-k bars, or with "
                        "--window_seconds of the top classes' probabilities over time.")
    flags.DEFINE_string("features", None, "Folder for one .npy per video: the pooled backbone features "
                        "(num_features,) float32, averaged over the views.")
    flags.DEFINE_float("window_seconds", None, "Classify sliding windows of this length (a timeline) instead of "
                       "the whole video.")
    flags.DEFINE_float("stride_seconds", None, "Seconds between window starts (default: --window_seconds).")
    flags.DEFINE_float("fps", None, "Frame rate of frame folders, for --window_seconds (video files carry theirs).")
    flags.DEFINE_integer("num_clips", None, "Clips per video or window (default: the checkpoint config's).")
    flags.DEFINE_integer("num_crops", None, "Crops per clip, 1, 3 or 10 (default: the checkpoint config's).")
    flags.DEFINE_integer("batch_videos", 8, "Videos (or windows) per device batch.")
    flags.DEFINE_integer("workers", 2, "Threads decoding videos while the device runs.")
    flags.DEFINE_string("checkpoint", "latest", "'latest' (the newest intact one), 'best' (the best evaluation "
                        "top-1 saved) or a step number (fails if it is damaged).")
    flags.register_validator("checkpoint", lambda value: value in ("latest", "best") or value.isdigit(),
                             "--checkpoint takes 'latest', 'best' or a step number")
    flags.register_validator("window_seconds", lambda value: value is None or value > 0, "--window_seconds > 0")
    flags.register_validator("stride_seconds", lambda value: value is None or value > 0, "--stride_seconds > 0")


def open_predictor() -> Predictor:
    try:
        return Predictor(FLAGS.workdir, checkpoint.parse_step(FLAGS.checkpoint), FLAGS.num_clips, FLAGS.num_crops,
                         FLAGS.batch_videos, FLAGS.workers)
    except checkpoint.NoCheckpointError as error:
        raise SystemExit(f"Workdir error (--workdir={FLAGS.workdir}): {error}") from None
    except checkpoint.DamagedCheckpointError as error:
        raise SystemExit(f"Checkpoint error (--workdir={FLAGS.workdir}): {error}") from None


def write_csv(path: str, header: list[str], rows: Iterable[list]) -> None:
    with epath.Path(path).open("w") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
            f.flush()


def run_timelines(predictor: Predictor, videos: list[str]) -> None:
    if len(videos) > 1 and FLAGS.save_png:
        raise SystemExit("--save_png draws the timeline of one video; give --output_csv for several")
    if len(videos) > 1 and not FLAGS.output_csv:
        raise SystemExit(f"{len(videos)} videos: give --output_csv=FILE for their timelines")

    def timeline_of(video):
        return predictor.timeline(video, FLAGS.window_seconds, FLAGS.stride_seconds, FLAGS.fps)

    if len(videos) == 1:  # a user's mistake stops before any file is written
        try:
            first = timeline_of(videos[0])
        except VIDEO_ERRORS as error:
            raise SystemExit(f"Video error: {error}") from None

    def rows():
        for video in videos:
            try:
                timeline = first if len(videos) == 1 else timeline_of(video)
            except VIDEO_ERRORS as error:
                print(f"skipped: {error}", file=sys.stderr)
                yield [video, "", ""] + top_cells(None, FLAGS.top_k) + [str(error)]
                continue
            for (start, end), top in zip(timeline.seconds, timeline.top(FLAGS.top_k)):
                if len(videos) == 1:
                    print(f"{start:8.2f} - {end:8.2f} s  " + "  ".join(f"{p:6.1%} {name}" for name, p in top[:3]))
                yield [video, f"{start:.3f}", f"{end:.3f}"] + top_cells(top, FLAGS.top_k) + [""]
            if FLAGS.save_png:
                save_timeline_png(FLAGS.save_png, timeline, FLAGS.top_k)
                print(f"wrote {FLAGS.save_png}")

    header = ["video", "window_start_s", "window_end_s"] + top_columns(FLAGS.top_k) + ["error"]
    if FLAGS.output_csv:
        write_csv(FLAGS.output_csv, header, rows())
        print(f"wrote {FLAGS.output_csv}")
    else:
        collections.deque(rows(), maxlen=0)


def run_classify(predictor: Predictor, videos: list[str], root: str, single: bool) -> None:
    import tqdm
    if single:
        try:
            results = [predictor.classify(videos[0], FLAGS.top_k)]
        except VIDEO_ERRORS as error:
            raise SystemExit(f"Video error: {error}") from None
        for name, probability in results[0].top:
            print(f"{probability:7.2%}  {name}")
        if FLAGS.save_png:
            save_png(FLAGS.save_png, results[0], videos[0])
            print(f"wrote {FLAGS.save_png}")
    else:
        results = tqdm.tqdm(predictor.classify_many(videos, FLAGS.top_k), total=len(videos), unit="video")
    failed = []

    def rows():
        for result in results:
            if result.error:
                failed.append(result.path)
                tqdm.tqdm.write(f"skipped: {result.error}", file=sys.stderr)
            elif not single and not FLAGS.output_csv:
                tqdm.tqdm.write(f"{result.path}: {result.top[0][0]} ({result.top[0][1]:.1%})")
            if FLAGS.features and result.features is not None:
                target = epath.Path(features_file(FLAGS.features, result.path, root))
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("wb") as f:
                    np.save(f, result.features)
            yield [result.path] + top_cells(result.top, FLAGS.top_k) + [result.error or ""]

    if FLAGS.output_csv:
        write_csv(FLAGS.output_csv, ["video"] + top_columns(FLAGS.top_k) + ["error"], rows())
        print(f"wrote {FLAGS.output_csv}")
    else:
        collections.deque(rows(), maxlen=0)
    if FLAGS.features:
        print(f"wrote {len(videos) - len(failed)} feature files under {FLAGS.features}")
    if failed:
        print(f"{len(failed)} of {len(videos)} videos could not be read (listed above"
              f"{' and in the error column' if FLAGS.output_csv else ''})")


def main(argv):
    del argv
    quiet.quiet_libraries()
    if bool(FLAGS.video) == bool(FLAGS.video_list):
        raise SystemExit("Give --video (a file or a folder) or --video_list (a text file), one of them")
    if FLAGS.features and FLAGS.window_seconds:
        raise SystemExit("--features describes whole videos: run it without --window_seconds")
    try:
        videos, root = collect_videos(FLAGS.video, FLAGS.video_list)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"Video error: {error}") from None
    single = len(videos) == 1 and not FLAGS.video_list and videos[0] == FLAGS.video
    if single:  # a video that cannot be opened stops before the checkpoint is read
        try:
            single_video.probe(videos[0])
        except VIDEO_ERRORS as error:
            raise SystemExit(f"Video error: {error}") from None
    predictor = open_predictor()
    if FLAGS.window_seconds:
        run_timelines(predictor, videos)
    else:
        run_classify(predictor, videos, root, single)


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["workdir"])
    app.run(main, flags_parser=cli.parse_flags)
