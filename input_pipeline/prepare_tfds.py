"""Prepares a TFDS dataset of `input_pipeline.tfds_builders` from its manual download.

    python -m input_pipeline.prepare_tfds --dataset=something_something_v2 \\
        --manual_dir=DOWNLOADS --data_dir=TFDS_DIR [--max_fps=0]

Then set `config.data.source='tfds'`, `tfds_name`, `tfds_data_dir` and, with `--max_fps`,
`tfds_max_fps`. The layout each dataset expects under `--manual_dir` is in
`input_pipeline/tfds_builders.py`.
"""
from absl import app
from absl import flags

from input_pipeline import tfds_builders

FLAGS = flags.FLAGS


def main(argv):
    del argv
    builder = tfds_builders.build(FLAGS.dataset, FLAGS.manual_dir, FLAGS.data_dir, FLAGS.max_fps)
    for name, split in builder.info.splits.items():
        print(f"{name}: {split.num_examples} videos")


if __name__ == "__main__":
    # Flags are defined only when run as a program, so importing this module defines none.
    flags.DEFINE_enum("dataset", None, sorted(tfds_builders.BUILDERS), "Dataset to prepare.")
    flags.DEFINE_string("manual_dir", None, "The downloaded dataset, laid out as "
                        "tfds_builders.py says.")
    flags.DEFINE_string("data_dir", None, "TFDS data dir to write (config.data.tfds_data_dir).")
    flags.DEFINE_float("max_fps", 0, "Keep at most this many frames a second of each video "
                         "(0: every frame; config.data.tfds_max_fps).")
    flags.mark_flags_as_required(["dataset", "manual_dir", "data_dir"])
    from blvnet_jax import cli  # the programs' shared flags parser (absl and ml_collections only)
    app.run(main, flags_parser=cli.parse_flags)
