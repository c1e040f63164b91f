"""Prepares a dataset of `input_pipeline.tfds_builders` from its manual download: the one stored format.

    python -m input_pipeline.prepare_tfds --dataset=something_something_v2 \\
        --manual_dir=DOWNLOADS --data_dir=TFDS_DIR [--max_fps=0] [--workers=N]
    python -m input_pipeline.prepare_tfds --dataset=video_folder --manual_dir=my_videos \\
        --data_dir=data/tfds [--classes=classes.txt]
    python -m input_pipeline.prepare_tfds --dataset=kinetics400 --manual_dir=DOWNLOADS \\
        --data_dir=TFDS_DIR --beam_runner=DirectRunner \\
        --beam_options="--direct_num_workers=8 --direct_running_mode=multi_processing"

Then set `config.data.source='tfds'`, `tfds_name`, `tfds_data_dir` and, with `--max_fps`,
`tfds_max_fps`. The layout each dataset expects under `--manual_dir` is in
`input_pipeline/tfds_builders.py`. Videos are decoded by `--workers` processes; a stopped run
decodes again only the videos it had not reached. Run again with the same inputs it does nothing;
with changed inputs it stops, saying what changed, unless `--overwrite` (which decodes only the
new and changed videos).

With `--beam_runner` (DirectRunner: this machine's processes; DataflowRunner, SparkRunner,
FlinkRunner: a cluster) or `--beam_options` (Beam's pipeline flags, e.g. `--runner=...
--project=...`), the videos are decoded and the shards written by that Apache Beam pipeline's
workers instead (`pip install -r requirements-beam.txt`; on a cluster the manual and data dirs
must be paths the workers read and write); the dataset is the same.
"""
import os
import shlex

from absl import app
from absl import flags
import tensorflow_datasets as tfds

from input_pipeline import tfds_builders
from input_pipeline import video_files

FLAGS = flags.FLAGS


def beam_download_config(runner, options):
    """The DownloadConfig running `runner` (a Beam runner's name) with `options` (Beam's pipeline
    flags, one string), or None (no Beam) when both are empty."""
    if not runner and not options:
        return None
    try:
        import apache_beam as beam
    except ImportError:
        raise SystemExit("prepare_tfds error: --beam_runner and --beam_options need Apache Beam: pip install -r "
                         "requirements-beam.txt") from None
    try:
        runner = beam.runners.create_runner(runner) if runner else None
    except ValueError as error:
        raise SystemExit(f"prepare_tfds error: --beam_runner: {error}") from None
    return tfds.download.DownloadConfig(
        beam_runner=runner,
        beam_options=beam.options.pipeline_options.PipelineOptions(flags=shlex.split(options or "")))


def main(argv):
    del argv
    options = {"classes_file": FLAGS.classes} if FLAGS.classes else {}
    if FLAGS.classes and FLAGS.dataset != "video_folder":
        raise SystemExit(f"prepare_tfds error: --classes is for video_folder; {FLAGS.dataset} names its classes.")
    try:
        builder, wrote = tfds_builders.build(FLAGS.dataset, FLAGS.manual_dir, FLAGS.data_dir, FLAGS.max_fps,
                                             FLAGS.overwrite, workers=FLAGS.workers,
                                             download_config=beam_download_config(FLAGS.beam_runner,
                                                                                  FLAGS.beam_options),
                                             **options)
    except (tfds_builders.PrepareError, video_files.TextError, FileNotFoundError) as error:
        raise SystemExit(f"prepare_tfds error: {error}") from None
    except KeyboardInterrupt:
        raise SystemExit("prepare_tfds stopped; the same command goes on from there (videos decoded so far are "
                         "kept).") from None
    if not wrote:
        print(f"{builder.data_dir} is up to date (prepared from these inputs): nothing to do.")
    names, left_out = builder.info.features["label"].names, builder.info.metadata.get("left_out", {})
    splits = [f"{split} {len(videos)} videos" + (f" ({left_out[split]} left out, unreadable)" if left_out.get(split)
                                                   else "")
              for split, videos in builder.info.metadata["inputs"]["videos"].items()]
    print(f"{FLAGS.dataset}: {len(names)} classes; {', '.join(splits)} listed; prepared in {builder.data_dir}")


if __name__ == "__main__":
    # Flags are defined only when run as a program, so importing this module defines none.
    flags.DEFINE_enum("dataset", None, sorted(tfds_builders.BUILDERS), "Dataset to prepare.")
    flags.DEFINE_string("manual_dir", None, "The downloaded dataset, laid out as tfds_builders.py says.")
    flags.DEFINE_string("data_dir", None, "TFDS data dir to write (config.data.tfds_data_dir).")
    flags.DEFINE_float("max_fps", 0, "Keep at most this many frames a second of each video "
                       "(0: every frame; config.data.tfds_max_fps).")
    flags.DEFINE_integer("workers", os.cpu_count(), "Processes decoding videos in parallel (without Beam).")
    flags.DEFINE_string("classes", None, "video_folder: a file of class names, one a line (line i = label "
                        "i); default: the sorted sub-folders of train.")
    flags.DEFINE_bool("overwrite", False, "Prepare the dataset again when its inputs changed since it "
                      "was prepared (only new and changed videos are decoded).")
    flags.DEFINE_string("beam_runner", None, "Prepare with Apache Beam on this runner: DirectRunner (this machine), "
                        "DataflowRunner, SparkRunner, FlinkRunner, ...; needs requirements-beam.txt.")
    flags.DEFINE_string("beam_options", None, "Apache Beam pipeline flags, one string (e.g. \"--direct_num_workers=8 "
                        "--direct_running_mode=multi_processing\" or \"--runner=DataflowRunner --project=...\").")
    flags.mark_flags_as_required(["dataset", "manual_dir", "data_dir"])
    from blvnet_jax import cli  # the programs' shared flags parser (absl and ml_collections only)
    app.run(main, flags_parser=cli.parse_flags)
