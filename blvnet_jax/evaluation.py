"""Video-level evaluation: softmax averaged over crops x clips, top-1/top-5, per-class results.

Writes into the workdir: `eval_results.json` (top1, top5, loss, num_videos, crops, clips, step),
`eval_predictions.csv` (one row per video), `eval_per_class.csv` and `eval_confusion.png`.
"""
import csv
import json

import jax
import numpy as np
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
    """Runs the eval split through the jitted eval step, across all hosts, every video once."""

    def __init__(self, config, graphdef, mesh, class_names: list[str] | None):
        self.config = config
        self.mesh = mesh
        self.class_names = class_names
        self.eval_step = jax.jit(steps.make_eval_step(graphdef, mesh))
        self.views = config.data.num_crops * config.data.num_clips
        if (config.eval_batch_size * self.views) % mesh.shape["data"]:
            raise ValueError(f"config.eval_batch_size={config.eval_batch_size} x {self.views} views must be "
                             f"divisible by the {mesh.shape['data']} devices of the data axis")

    def predict(self, params, batch_stats) -> dict:
        """`{'probabilities' (videos, classes), 'labels', 'video_index'}` over the whole eval split,
        ordered by video index.

        Every view travels as one row with its own label, mask and video index, all sharded as the
        video, so each logit meets its own label whatever the mesh's device order (on multi-host
        TPU slices the data axis interleaves the hosts' devices).
        """
        config = self.config
        dataset = input_pipeline.create_eval_dataset(
            config.data, num_frames=config.model.num_frames,
            batch_size=config.eval_batch_size // jax.process_count(),
            process_index=jax.process_index(), process_count=jax.process_count())
        parts = []
        for batch in dataset:
            video = batch["video"]
            rows = {"video": video.reshape((-1,) + video.shape[2:])}
            rows.update({key: np.repeat(np.asarray(batch[key]), self.views) for key in VIEW_FIELDS})
            rows = global_batch(rows, self.mesh)
            rows["logits"] = self.eval_step(params, batch_stats, rows.pop("video"))
            parts.append(multihost_utils.process_allgather(rows, tiled=True))
        rows = {key: np.concatenate([part[key] for part in parts]) for key in ("logits",) + VIEW_FIELDS}
        return views_to_videos(rows, self.views)

    def evaluate(self, params, batch_stats, step: int, workdir: str | epath.Path) -> dict:
        """Evaluates, writes the result files (process 0) and returns `eval_results.json`'s content."""
        predictions = self.predict(params, batch_stats)
        probabilities, labels = predictions["probabilities"], predictions["labels"]
        results = dict(video_metrics(probabilities, labels), num_videos=int(len(labels)),
                       crops=self.config.data.num_crops, clips=self.config.data.num_clips, step=int(step))
        if jax.process_index() == 0:
            write_results(workdir, results, predictions, self.class_names)
        return results


def write_results(workdir: str | epath.Path, results: dict, predictions: dict,
                  class_names: list[str] | None) -> None:
    """The result files of one evaluation, into a local workdir or a URL."""
    workdir = hosts.workdir_path(str(workdir))
    probabilities, labels = predictions["probabilities"], predictions["labels"]
    num_classes = probabilities.shape[1]
    names = class_names or [str(i) for i in range(num_classes)]
    predicted = probabilities.argmax(axis=1)
    with (workdir / "eval_results.json").open("w") as f:
        json.dump(results, f, indent=2)
    with (workdir / "eval_predictions.csv").open("w") as f:
        writer = csv.writer(f)
        writer.writerow(["video_index", "label", "predicted", "probability", "top5"])
        for index, label, row in zip(predictions["video_index"], labels, probabilities):
            top5 = np.argsort(-row)[:5]
            writer.writerow([int(index), names[label], names[top5[0]], f"{row[top5[0]]:.4f}",
                             " ".join(names[c] for c in top5)])
    matrix = confusion_matrix(predicted, labels, num_classes)
    with (workdir / "eval_per_class.csv").open("w") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "videos", "top1"])
        for c in range(num_classes):
            total = matrix[c].sum()
            writer.writerow([names[c], int(total), f"{matrix[c, c] / total:.4f}" if total else ""])
    plot_confusion(matrix, names, workdir / "eval_confusion.png")


def plot_confusion(matrix: np.ndarray, names: list[str], path: epath.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = min(20, 4 + 0.3 * len(names))
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    if len(names) <= 40:
        axes.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
        axes.set_yticks(range(len(names)), names, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    figure.tight_layout()
    with path.open("wb") as f:
        figure.savefig(f, format="png", dpi=100)
    plt.close(figure)
