"""Class probabilities for one video file or frame folder, from a trained or converted checkpoint.

    python -m blvnet_jax.predict --workdir=DIR --video=FILE_OR_FOLDER [--top_k=5] [--save_png=OUT.png]
        [--checkpoint=latest|best|STEP]

The video goes through the evaluation transforms of the checkpoint's config (its crops x clips);
the softmax is averaged over the views, as in evaluation.
"""
import jax
import ml_collections
import numpy as np
from absl import app, flags
from etils import epath
from flax import nnx

import input_pipeline.single_video
from blvnet_jax import checkpoint, config_check, evaluation, steps


def predict(workdir: str, video_path: str, top_k: int = 5, step: int | str = "latest") -> dict:
    """`{'top': [(class name, probability)], 'views' uint8, 'indices'}` for one video, by the
    checkpoint `step` (`checkpoint.restore_model`'s)."""
    model, metadata = checkpoint.restore_model(workdir, step)
    config = ml_collections.ConfigDict(metadata["config"])
    config_check.check_input_channels(config.model)
    views, indices = input_pipeline.single_video.eval_views(video_path, config.data, config.model.num_frames)
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    logits = jax.jit(steps.make_eval_step(graphdef))(params, batch_stats, views)
    probabilities = evaluation.average_views(np.asarray(logits, np.float64), len(views))[0]
    names = metadata.get("class_names") or [str(i) for i in range(len(probabilities))]
    ranked = np.argsort(-probabilities)[:top_k]
    return {"top": [(names[c], float(probabilities[c])) for c in ranked], "views": views, "indices": indices,
            "step": metadata["step"]}


def save_png(path: str, result: dict, video_path: str) -> None:
    """The first view's sampled frames in a row, and the top-k probabilities as bars (`path` may be
    a URL)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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
    with epath.Path(path).open("wb") as f:
        figure.savefig(f, format="png", dpi=100)
    plt.close(figure)


FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when this module runs as a program."""
    flags.DEFINE_string("workdir", None, "Workdir with checkpoints/ (trained, or written by blvnet_jax.convert).")
    flags.DEFINE_string("video", None, "A video file (anything PyAV decodes) or a folder of frames.")
    flags.DEFINE_integer("top_k", 5, "How many classes to print.")
    flags.DEFINE_string("save_png", None, "Optional PNG with the sampled frames and the top-k bars.")
    flags.DEFINE_string("checkpoint", "latest", "'latest' (the newest intact one), 'best' (the best evaluation "
                        "top-1 saved) or a step number (fails if it is damaged).")
    flags.register_validator("checkpoint", lambda value: value in ("latest", "best") or value.isdigit(),
                             "--checkpoint takes 'latest', 'best' or a step number")


def main(argv):
    del argv
    try:
        result = predict(FLAGS.workdir, FLAGS.video, FLAGS.top_k, checkpoint.parse_step(FLAGS.checkpoint))
    except checkpoint.NoCheckpointError as error:
        raise SystemExit(f"Workdir error (--workdir={FLAGS.workdir}): {error}") from None
    except checkpoint.DamagedCheckpointError as error:
        raise SystemExit(f"Checkpoint error (--workdir={FLAGS.workdir}): {error}") from None
    for name, probability in result["top"]:
        print(f"{probability:7.2%}  {name}")
    if FLAGS.save_png:
        save_png(FLAGS.save_png, result, FLAGS.video)
        print(f"wrote {FLAGS.save_png}")


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["workdir", "video"])
    app.run(main)
