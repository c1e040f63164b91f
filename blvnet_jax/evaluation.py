"""Video-level evaluation: softmax averaged over crops x clips, top-1/top-5, per-class results.

Each evaluation (checkpoint step and protocol) has its own folder, `result_dir`:
`{workdir}/eval/step_<N>_<crops>x<clips>/` with `results.json` (model, step, crops, clips, top1,
top5, loss, num_videos), `predictions.csv` (a row per video: its index and id, its label, the top-k
classes and their probabilities), `per_class.csv`, `confusion.png` and, beyond `MAX_ANNOTATED`
classes, `confused_pairs.csv`. `{workdir}/eval/results.jsonl` gets a line per evaluation (its
results and folder), so that evaluations can be compared.
"""
import csv
import json
import logging

import jax
import numpy as np
import PIL.Image
from etils import epath
from jax.experimental import multihost_utils

import input_pipeline
from blvnet_jax import hosts, steps
from blvnet_jax.sharding import global_batch


def video_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """Top-1, top-5 and mean negative log-likelihood of video-level class probabilities.

    probabilities: `(videos, classes)` (already averaged over views); labels: int `(videos,)`.
    """
    ranked = np.argsort(-probabilities, axis=1)
    hits = ranked == labels[:, None]
    true_probability = probabilities[np.arange(len(labels)), labels]
    return {"top1": float(hits[:, :1].any(axis=1).mean()),
            "top5": float(hits[:, :5].any(axis=1).mean()),
            "loss": float(-np.log(np.maximum(true_probability, 1e-12)).mean())}


def average_views(logits: np.ndarray, views: int) -> np.ndarray:
    """`(videos * views, classes)` logits -> `(videos, classes)` softmax averaged over the views."""
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return probabilities.reshape(-1, views, logits.shape[-1]).mean(axis=1)


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """`(classes, classes)` counts, row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


VIEW_FIELDS = ("label", "video_index", "mask")


def views_to_videos(rows: dict, views: int) -> dict:
    """Rows of views in any order -> one row per video, ordered by video index.

    rows: `logits` `(rows, classes)`, `label`, `video_index`, `mask` `(rows,)`, each kept video
    having `views` rows. Returns `probabilities` `(videos, classes)` (softmax averaged over the
    views, float64), `labels` int64 and `video_index`.
    """
    keep = rows["mask"].astype(bool)
    order = np.argsort(rows["video_index"][keep], kind="stable")
    kept = {key: value[keep][order] for key, value in rows.items()}
    return {"probabilities": average_views(kept["logits"].astype(np.float64), views),
            "labels": kept["label"][::views].astype(np.int64), "video_index": kept["video_index"][::views]}


class Evaluator:
    """Runs the eval split through the jitted eval step, across all hosts, every video once.

    `output_of_label`: the model output of each label of `source`, when the model was trained on its
    classes in another order (`train.outputs_of_data_labels`); None: output i is label i."""

    def __init__(self, config, graphdef, mesh, source: input_pipeline.Source, class_names: list[str] | None,
                 output_of_label: list[int] | None = None):
        self.config = config
        self.mesh = mesh
        self.source = source
        self.class_names = class_names
        self.output_of_label = output_of_label
        self.eval_step = jax.jit(steps.make_eval_step(graphdef, mesh))
        self.views = config.data.num_crops * config.data.num_clips
        if (config.eval_batch_size * self.views) % mesh.shape["data"]:
            raise ValueError(f"config.eval_batch_size={config.eval_batch_size} x {self.views} views must be "
                             f"divisible by the {mesh.shape['data']} devices of the data axis")
        self._video_ids = None

    def predict(self, params, batch_stats) -> dict:
        """`{'probabilities' (videos, classes), 'labels', 'video_index'}` over the whole eval split,
        ordered by video index, class i being label i.

        Every view travels as one row with its own label, mask and video index, all sharded as the
        video, so each logit meets its own label whatever the mesh's device order (on multi-host
        TPU slices the data axis interleaves the hosts' devices).
        """
        config = self.config
        dataset = input_pipeline.create_eval_dataset(
            self.source, num_frames=config.model.num_frames,
            batch_size=config.eval_batch_size // jax.process_count(),
            process_index=jax.process_index(), process_count=jax.process_count())
        parts = []
        with dataset:
            for batch in dataset:
                video = batch["video"]
                rows = {"video": video.reshape((-1,) + video.shape[2:])}
                rows.update({key: np.repeat(np.asarray(batch[key]), self.views) for key in VIEW_FIELDS})
                rows = global_batch(rows, self.mesh)
                rows["logits"] = self.eval_step(params, batch_stats, rows.pop("video"))
                parts.append(multihost_utils.process_allgather(rows, tiled=True))
        hosts.raise_together(dataset.error, input_pipeline.DataError)
        rows = {key: np.concatenate([part[key] for part in parts]) for key in ("logits",) + VIEW_FIELDS}
        videos = views_to_videos(rows, self.views)
        if self.output_of_label is not None:  # column i: the probability of label i
            videos["probabilities"] = videos["probabilities"][:, self.output_of_label]
        return videos

    def video_ids(self) -> list[str]:
        """The id of each video of the 'val' split by video index, read once."""
        if self._video_ids is None:
            self._video_ids = self.source.video_ids("val")
        return self._video_ids

    def evaluate(self, params, batch_stats, step: int, workdir: str | epath.Path, writer=None) -> dict:
        """Evaluates, writes the result files into `result_dir` (process 0) and returns `results.json`'s
        content. With a clu metric `writer`, the confusion matrix also goes to TensorBoard as the
        image `eval/confusion`."""
        predictions = self.predict(params, batch_stats)
        probabilities, labels = predictions["probabilities"], predictions["labels"]
        results = dict(model=self.config.model.name, step=int(step), crops=self.config.data.num_crops,
                       clips=self.config.data.num_clips, **video_metrics(probabilities, labels),
                       num_videos=int(len(labels)))
        if jax.process_index() == 0:
            image = write_results(workdir, results, predictions, self.class_names, self.video_ids())
            if writer is not None:
                writer.write_images(step, {"eval/confusion": image[None]})
            logging.info("Evaluation of step %d (%s): top-1 %.4f; files in %s", step, protocol(results),
                         results["top1"], result_dir(workdir, step, results["crops"], results["clips"]))
        return results


MAX_ANNOTATED = 30  # classes up to which the confusion matrix shows each cell's count
MAX_LABELLED = 60  # classes up to which its axes name them
CONFUSED_PAIRS = 20  # rows of `confused_pairs.csv` (written beyond MAX_ANNOTATED classes)
TOP_K = 5  # classes per video in `predictions.csv`


def result_dir(workdir: str | epath.Path, step: int, crops: int, clips: int) -> epath.Path:
    """`{workdir}/eval/step_<step>_<crops>x<clips>`: the files of one checkpoint and protocol."""
    return hosts.workdir_path(str(workdir)) / "eval" / f"step_{step}_{crops}x{clips}"


def protocol(results: dict) -> str:
    return f"{results['crops']} crops x {results['clips']} clips"


def confusion_title(results: dict) -> str:
    return (f"{results['model']}, step {results['step']}, {protocol(results)}: top-1 {results['top1']:.1%} "
            f"of {results['num_videos']} videos")


def write_results(workdir: str | epath.Path, results: dict, predictions: dict, class_names: list[str] | None,
                  video_ids: list[str] | None = None) -> np.ndarray:
    """Writes the files of one evaluation into its `result_dir` (a local workdir or a URL) and adds
    its line to `{workdir}/eval/results.jsonl`; returns the confusion matrix image, uint8
    `(height, width, 3)`.

    results: `Evaluator.evaluate`'s (model, step, crops, clips, top1, ..., num_videos); predictions:
    `Evaluator.predict`'s; video_ids: each video's id by video index (`Source.video_ids`), None: left empty.
    """
    workdir = hosts.workdir_path(str(workdir))
    folder = result_dir(workdir, results["step"], results["crops"], results["clips"])
    folder.mkdir(parents=True, exist_ok=True)
    probabilities, labels = predictions["probabilities"], predictions["labels"]
    num_classes = probabilities.shape[1]
    names = class_names or [str(i) for i in range(num_classes)]
    with (folder / "results.json").open("w") as f:
        json.dump(results, f, indent=2)
    write_predictions(folder / "predictions.csv", predictions, names, video_ids)
    matrix = confusion_matrix(probabilities.argmax(axis=1), labels, num_classes)
    with (folder / "per_class.csv").open("w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["class", "videos", "top1"])
        for c in range(num_classes):
            total = matrix[c].sum()
            writer.writerow([names[c], int(total), f"{matrix[c, c] / total:.4f}" if total else ""])
    if num_classes > MAX_ANNOTATED:
        with (folder / "confused_pairs.csv").open("w") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["true", "predicted", "count", "rate"])
            for true, predicted, count, rate in confused_pairs(matrix):
                writer.writerow([names[true], names[predicted], count, f"{rate:.4f}"])
    image = plot_confusion(matrix, names, confusion_title(results))
    with (folder / "confusion.png").open("wb") as f:
        PIL.Image.fromarray(image).save(f, format="PNG")
    append_line(workdir / "eval" / "results.jsonl", dict(results, path=f"eval/{folder.name}"))
    return image


def write_predictions(path: epath.Path, predictions: dict, names: list[str], video_ids: list[str] | None) -> None:
    """`predictions.csv`: video_index, video_id, label, then top<i>_class and top<i>_probability for
    i = 1 .. min(TOP_K, classes), the most probable first."""
    probabilities = predictions["probabilities"]
    k = min(TOP_K, probabilities.shape[1])
    with path.open("w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["video_index", "video_id", "label"] +
                        [f"top{i}_{field}" for i in range(1, k + 1) for field in ("class", "probability")])
        for index, label, row in zip(predictions["video_index"], predictions["labels"], probabilities):
            top = np.argsort(-row, kind="stable")[:k]
            writer.writerow([int(index), video_ids[index] if video_ids is not None else "", names[label],
                             *[value for c in top for value in (names[c], f"{row[c]:.4f}")]])


def confused_pairs(matrix: np.ndarray, count: int = CONFUSED_PAIRS) -> list[tuple[int, int, int, float]]:
    """The `count` largest off-diagonal cells of a confusion matrix (row = true class) as `(true,
    predicted, videos, rate)`, rate = videos / the true class's videos; most videos first, then
    the higher rate, then class order."""
    totals = matrix.sum(axis=1)
    cells = [(int(matrix[t, p]), int(t), int(p)) for t, p in zip(*np.nonzero(matrix)) if t != p]
    cells.sort(key=lambda cell: (-cell[0], -cell[0] / totals[cell[1]], cell[1], cell[2]))
    return [(t, p, videos, videos / float(totals[t])) for videos, t, p in cells[:count]]


def read_index(workdir: str | epath.Path) -> list[dict]:
    """The lines of `{workdir}/eval/results.jsonl`, oldest first: each evaluation's results and the
    folder of its files (`path`, relative to the workdir); [] when none."""
    path = hosts.workdir_path(str(workdir)) / "eval" / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def append_line(path: epath.Path, record: dict) -> None:
    """Adds `record` as a JSON line to `path`, by rewriting it (object stores cannot append)."""
    text = path.read_text() if path.exists() else ""
    path.write_text(text + json.dumps(record) + "\n")


def plot_confusion(matrix: np.ndarray, names: list[str], title: str) -> np.ndarray:
    """The confusion matrix (row = true class) coloured by the share of the true class's videos,
    with a colour bar, each cell's count up to `MAX_ANNOTATED` classes and the class names up to
    `MAX_LABELLED`: an RGB image, uint8 `(height, width, 3)`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    n = len(names)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = min(20, 5 + 0.3 * n)
    figure = Figure(figsize=(size + 1.5, size), dpi=100)
    canvas = FigureCanvasAgg(figure)
    axes = figure.subplots()
    shown = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04, label="share of the true class's videos")
    if n <= MAX_LABELLED:
        fontsize = 8 if n <= MAX_ANNOTATED else 6
        axes.set_xticks(range(n), names, rotation=90, fontsize=fontsize)
        axes.set_yticks(range(n), names, fontsize=fontsize)
    if n <= MAX_ANNOTATED:
        for true, predicted in zip(*np.nonzero(matrix)):
            axes.text(predicted, true, str(matrix[true, predicted]), ha="center", va="center", fontsize=7,
                      color="white" if rates[true, predicted] > 0.5 else "black")
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
