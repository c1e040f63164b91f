"""Train and evaluate bLVNet-TAM and its baselines.

    python main.py --config=configs/ssv1_8x2.py --workdir=DIR [--mode=train|eval] [--config.a.b=v ...]

`train` resumes from the newest intact checkpoint in DIR and evaluates periodically; `eval` evaluates
a checkpoint (`--checkpoint=latest|best|STEP`; e.g. a converted official one) with the config's
crops x clips, into `DIR/eval/step_<N>_<crops>x<clips>/`. `--check_data`
first opens every frame of both splits and stops with the list of all problems, if there are any
(training alone skips and counts unreadable videos). Several hosts: the same command on every
host with `--distributed` (a TPU slice, SLURM and Open MPI tell JAX the coordinator) or with
`--coordinator_address`, `--num_processes` and `--process_id`; the workdir must be one directory
shared by all hosts (e.g. `gs://bucket/run`).
"""
import os

from blvnet_jax import cli, quiet, xla_env

xla_env.configure()  # XLA:CPU flags and huge pages; must come before jax is imported

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.DEFINE_enum("mode", "train", ["train", "eval"], "Train (with periodic evaluation) or evaluate only.")
flags.DEFINE_string("checkpoint", "latest", "--mode=eval: which checkpoint: 'latest' (the newest intact one), "
                    "'best' (the best evaluation top-1 saved) or a step number (fails if it is damaged).")
flags.register_validator("checkpoint", lambda value: value in ("latest", "best") or value.isdigit(),
                         "--checkpoint takes 'latest', 'best' or a step number")
flags.DEFINE_bool("check_data", False, "Before anything else, check every video of the train and val splits "
                  "(input_pipeline.check_data) and stop with the list of problems if there are any.")
flags.DEFINE_bool("distributed", False, "Several hosts: jax.distributed.initialize() finds the coordinator itself "
                  "(TPU slices, SLURM, Open MPI); elsewhere pass the three flags below.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for multi-host runs.")
flags.DEFINE_integer("num_processes", None, "Number of processes (hosts), for multi-host runs.")
flags.DEFINE_integer("process_id", None, "This process's index, for multi-host runs.")


def check_data():
    """Checks both splits of the config's data; exits with status 1, listing every problem, if any."""
    from input_pipeline import check_data as checker
    config_file = config_flags.get_config_filename(FLAGS["config"])
    try:
        problems, checked = checker.check_splits(FLAGS.config.data, ("train", "val"), workers=os.cpu_count())
    except (FileNotFoundError, ValueError) as error:  # A split not found or unreadable as configured (DataError).
        raise SystemExit(f"Data error ({config_file} with its --config.* overrides): {error}") from None
    if problems:
        raise SystemExit(f"{checker.report(problems, checked)}\nFound in the train and val splits of {config_file}: "
                         "fix them, or train without --check_data to skip and count unreadable videos.")
    logging.info("--check_data: %s", checker.report([], checked))


def main(argv):
    del argv
    quiet.quiet_libraries()
    import jax
    if FLAGS.distributed or FLAGS.coordinator_address or FLAGS.num_processes:
        jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    from blvnet_jax import config_check, hosts
    if FLAGS.check_data:
        with hosts.together(SystemExit):  # every host checks its own copy of the data; all stop together
            check_data()
    try:
        # Checked before anything is built or compiled (the data: its files and class count, no video read).
        if FLAGS.mode == "train":
            config_check.check_training(FLAGS.config)
        else:
            config_check.check_evaluation(FLAGS.config)
            config_check.check_workdir_model(FLAGS.config, FLAGS.workdir)
    except config_check.ConfigError as error:
        raise SystemExit(f"Config error ({config_flags.get_config_filename(FLAGS['config'])} with its "
                         f"--config.* overrides): {error}") from None
    from blvnet_jax import checkpoint, recipe, train, workdir_lock
    import input_pipeline
    logging.info("JAX %s: process %d of %d, %d devices in all (%d here: %s)", jax.__version__, jax.process_index(),
                 jax.process_count(), jax.device_count(), jax.local_device_count(), jax.local_devices()[0].device_kind)
    try:
        if FLAGS.mode == "train":
            results = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
        else:
            results = train.evaluate_checkpoint(FLAGS.config, FLAGS.workdir, checkpoint.parse_step(FLAGS.checkpoint))
    except (hosts.NotSharedError, workdir_lock.WorkdirBusyError, checkpoint.NoCheckpointError,
            checkpoint.WeightsOnlyError) as error:
        raise SystemExit(f"Workdir error (--workdir={FLAGS.workdir}): {error}") from None
    except (checkpoint.DamagedCheckpointError, checkpoint.ArchitectureError, recipe.ClassListError) as error:
        raise SystemExit(f"Checkpoint error (--workdir={FLAGS.workdir}): {error}") from None
    except recipe.RecipeChangedError as error:
        raise SystemExit(f"Resume error (--workdir={FLAGS.workdir}): {error}") from None
    except checkpoint.SaveError as error:
        raise SystemExit(f"Checkpoint error: {error}") from None
    except FloatingPointError as error:
        raise SystemExit(f"Training stopped: {error}") from None
    except input_pipeline.DataError as error:
        raise SystemExit(f"Data error ({config_flags.get_config_filename(FLAGS['config'])} with its --config.* "
                         f"overrides): {error}") from None
    logging.info("Evaluation: %s", results)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, flags_parser=cli.parse_flags)
