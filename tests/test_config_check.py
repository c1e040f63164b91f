"""Config validation: each impossible setting fails before any compile, naming its field."""
import os
import re
import subprocess
import sys

import pytest
from flax import nnx

from blvnet_jax import checkpoint, config_check
from blvnet_jax.models import create_model
from configs import demo, ssv1_8x2


def demo_config(**model):
    config = demo.get_config()
    config.model.update(model)
    return config


@pytest.mark.parametrize("model,field", [
    (dict(num_frames=15), "num_frames=15"),
    (dict(blending_frames=4), "blending_frames=4"),
    (dict(name="i3d"), "name='i3d'"),
    (dict(depth=34), "depth=34"),
    (dict(dtype="float16"), "dtype='float16'"),
    (dict(width=15), "width=15"),
])
def test_model_fields(model, field):
    with pytest.raises(config_check.ConfigError, match=f"config.model.{field}"):
        config_check.check_training(demo_config(**model))


def test_flow_input_is_rejected_where_the_input_pipeline_feeds_the_model():
    config = demo_config(input_channels=10)
    for check in (config_check.check_training, config_check.check_evaluation):
        with pytest.raises(config_check.ConfigError, match="config.model.input_channels=10: .* RGB"):
            check(config)


def test_odd_frame_count_is_fine_for_frame_models():
    config_check.check_model(demo_config(name="tsn", num_frames=15).model, 64)


@pytest.mark.parametrize("crop_size", [64, 100, 112, 160, 224])
def test_crop_sizes_the_official_model_accepts(crop_size):
    config_check.check_model(demo_config().model, crop_size)


def test_tiny_crop_is_rejected():
    with pytest.raises(config_check.ConfigError, match="config.data.crop_size=16"):
        config_check.check_model(demo_config().model, 16)


def test_batch_must_split_over_devices(monkeypatch):
    monkeypatch.setattr(config_check.jax, "device_count", lambda: 8)
    config = demo_config()
    config.batch_size = 12
    with pytest.raises(config_check.ConfigError, match="config.batch_size=12 .* 8 devices"):
        config_check.check_training(config)


def test_missing_dataset_files_are_named():
    with pytest.raises(config_check.ConfigError, match="config.data.root='data/something-something-v1/frames'"):
        config_check.check_training(ssv1_8x2.get_config())


@pytest.mark.parametrize("field", ["root", "val_list"])
def test_frame_folders_on_a_bucket_are_refused_with_what_to_do(tmp_path, field):
    config = demo_config()
    config.data.update(source="frames", root=str(tmp_path), val_list="val.txt", class_names_file="", num_classes=8)
    config.data[field] = "gs://bucket/ssv1/" + field
    with pytest.raises(config_check.ConfigError, match=re.escape(
            f"config.data.{field}='gs://bucket/ssv1/{field}': frame folders and their lists are read from a local or "
            "mounted file system; mount the bucket")):
        config_check.check_evaluation(config)


def test_frames_the_config_does_not_find_are_named_with_what_to_set(tmp_path):
    # Frames named as TSN and TSM name them, a list of the official layout, the default '{:05d}.jpg'.
    for video in ("a", "b"):
        (tmp_path / "frames" / video).mkdir(parents=True)
        for number in (1, 2, 3):
            (tmp_path / "frames" / video / f"img_{number:05d}.jpg").write_bytes(b"")
    (tmp_path / "val.txt").write_text("frames/a 1 3 0\nframes/b 1 3 1\n")
    config = demo_config()
    config.data.update(source="frames", root=str(tmp_path), val_list="val.txt", class_names_file="", num_classes=8)
    with pytest.raises(config_check.ConfigError, match=re.escape(
            f"config.data.image_template='{{:05d}}.jpg' names no frame of the first 2 videos of {tmp_path}/val.txt: "
            f"{tmp_path}/frames/a/00001.jpg does not exist, but {tmp_path}/frames/a holds img_00001.jpg, "
            "img_00002.jpg, img_00003.jpg, ...: set --config.data.image_template='img_{:05d}.jpg'")):
        config_check.check_evaluation(config)
    config.data.image_template = "img_{:05d}.jpg"
    config_check.check_evaluation(config)
    config.data.root = str(tmp_path / "frames")  # One folder too deep: no video folder is found.
    (tmp_path / "frames" / "val.txt").write_text("frames/a 1 3 0\n")
    with pytest.raises(config_check.ConfigError, match=re.escape(
            f"none of the first 1 videos of {tmp_path}/frames/val.txt has a folder of frames under config.data.root="
            f"'{tmp_path}/frames' (e.g. {tmp_path}/frames/frames/a): set config.data.root")):
        config_check.check_evaluation(config)


def test_init_from_another_architecture(tmp_path):
    source = demo_config(width=8)
    checkpoint.save_model(str(tmp_path), 1, create_model(source.model, rngs=nnx.Rngs(0)), source)
    config = demo_config(width=16)
    config.init_from = str(tmp_path)
    with pytest.raises(config_check.ConfigError, match="holds model.width=8 but this config has model.width=16"):
        config_check.check_training(config)
    empty = demo_config()
    empty.init_from = str(tmp_path / "nothing")
    with pytest.raises(config_check.ConfigError, match="has no checkpoint"):
        config_check.check_training(empty)


SHARED = {"__init__", "base", "data_defaults", "something", "kinetics", "baselines"}
SETTINGS = sorted(p.stem for p in __import__("pathlib").Path("configs").glob("*.py") if p.stem not in SHARED)


@pytest.mark.parametrize("name", SETTINGS)
def test_every_setting_is_a_valid_model(name):
    config = __import__(f"configs.{name}", fromlist=["get_config"]).get_config()
    config_check.check_model(config.model, config.data.crop_size)
    assert config.model.num_classes > 0 and config.batch_size > 0


def test_frame_axis_must_divide_devices_and_frames(monkeypatch):
    monkeypatch.setattr(config_check.jax, "device_count", lambda: 8)
    config = demo_config()
    config.batch_size = config.eval_batch_size = 8
    config.mesh_shape = (-1, 3)
    with pytest.raises(config_check.ConfigError, match=r"config.mesh_shape=\(-1, 3\)"):
        config_check.check_training(config)
    config.mesh_shape = (2, 4)
    config.model.num_frames = 12
    with pytest.raises(config_check.ConfigError,
                       match=r"num_frames=12 is not a multiple of 8 \(bLVNet splits frame pairs"):
        config_check.check_training(config)
    config.model.update(dict(name="tsn", num_frames=6))
    with pytest.raises(config_check.ConfigError, match="config.model.num_frames=6 is not a multiple of 4"):
        config_check.check_training(config)


@pytest.mark.parametrize("name,num_frames,blending_frames,refused", [
    ("blvnet_tam", 8, 3, False),   # blocks of 1 pair, reach 1
    ("blvnet_tam", 8, 5, True),    # reach 2
    ("blvnet_tam", 16, 5, False),
    ("tsn_tam", 4, 3, False),
    ("tsn_tam", 4, 5, True),
    ("tsm", 4, 5, False),          # a shift reaches one frame whatever blending_frames says
    ("tsn", 4, 9, False),
])
def test_frame_blocks_must_hold_the_temporal_modules_reach(monkeypatch, name, num_frames, blending_frames, refused):
    monkeypatch.setattr(config_check.jax, "device_count", lambda: 8)
    config = demo_config()
    config.batch_size = config.eval_batch_size = 8
    config.mesh_shape = (2, 4)
    config.model.update(dict(name=name, num_frames=num_frames, blending_frames=blending_frames))
    if refused:
        with pytest.raises(config_check.ConfigError, match="shorter than the temporal module's reach of 2"):
            config_check.check_training(config)
    else:
        config_check.check_training(config)


def test_evaluation_needs_only_the_validation_list(tmp_path):
    config = ssv1_8x2.get_config()
    (tmp_path / "val.txt").write_text("video 1 8 0\n")
    (tmp_path / "video").mkdir()
    (tmp_path / "video" / "00001.jpg").write_bytes(b"")  # Found, not read.
    (tmp_path / "classes.txt").write_text("".join(f"class {k}\n" for k in range(174)))
    config.data.update(root=str(tmp_path), train_list="absent_train.txt", val_list="val.txt",
                       class_names_file="classes.txt")
    config_check.check_evaluation(config)
    with pytest.raises(config_check.ConfigError, match="config.data.train_list='absent_train.txt'"):
        config_check.check_training(config)


def test_main_stops_on_a_bad_config_with_the_field_and_no_traceback(tmp_path):
    command = [sys.executable, "main.py", "--config=configs/demo.py", f"--workdir={tmp_path}",
               "--config.model.num_frames=7"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "Config error (configs/demo.py with its --config.* overrides): config.model.num_frames=7")
    assert "Traceback" not in result.stderr and not os.listdir(tmp_path)


@pytest.fixture(scope="module")
def two_class_tfds(tmp_path_factory):
    """The data dir of a video_folder TFDS dataset of 2 classes (cat, dog), one 3-frame video each in its
    train and validation splits."""
    # The input pipeline (TensorFlow) is imported only by the tests that prepare data.
    import numpy as np

    from input_pipeline import synthetic, tfds_builders, video_files
    manual = tmp_path_factory.mktemp("videos")
    for split in ("train", "validation"):
        for label, name in enumerate(("cat", "dog")):
            (manual / split / name).mkdir(parents=True)
            video_files.write_video(str(manual / split / name / "a.mp4"),
                                    synthetic.render_video(label, 3, 32, 40, np.random.default_rng(label)))
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    tfds_builders.build("video_folder", str(manual), data_dir)
    return data_dir


def test_model_needs_one_output_per_class_of_the_data(tmp_path, two_class_tfds):
    # The synthetic data's classes are counted from its settings: nothing is written.
    config = demo_config(num_classes=2)
    config.data.root = str(tmp_path / "synthetic")
    for check in (config_check.check_training, config_check.check_evaluation):
        with pytest.raises(config_check.ConfigError, match=r"^config.model.num_classes=2 but the data has 8 classes "
                           r"\(config.data.synthetic.num_classes\): set --config.model.num_classes=8$"):
            check(config)
    assert not os.path.exists(tmp_path / "synthetic")
    # TFDS: the class names kept in the prepared dataset's metadata.
    config.data.update(source="tfds", tfds_name="video_folder", tfds_data_dir=two_class_tfds)
    config.model.num_classes = 8
    with pytest.raises(config_check.ConfigError, match=r"^config.model.num_classes=8 but the data has 2 classes \(the "
                       r"class names of TFDS dataset 'video_folder'\): set --config.model.num_classes=2$"):
        config_check.check_training(config)
    config.model.num_classes = 2
    config_check.check_training(config)
    config_check.check_evaluation(config)
    config.data.num_classes = 3
    with pytest.raises(config_check.ConfigError, match=r"has 3 classes \(config.data.num_classes\)"):
        config_check.check_evaluation(config)
    config.data.tfds_data_dir = str(tmp_path)  # Nothing prepared there: the error says how to prepare it.
    with pytest.raises(config_check.ConfigError, match="^TFDS dataset .video_folder. is not prepared in .*prepare"):
        config_check.check_evaluation(config)
    # Frame folders: the class names file the config names.
    (tmp_path / "val.txt").write_text("video 1 8 0\n")
    (tmp_path / "video").mkdir()
    (tmp_path / "video" / "00001.jpg").write_bytes(b"")
    (tmp_path / "classes.txt").write_text("cat\ndog\nemu\n")
    config.data.update(source="frames", root=str(tmp_path), val_list="val.txt", num_classes=0,
                       class_names_file="classes.txt")
    with pytest.raises(config_check.ConfigError, match=r"num_classes=2 but the data has 3 classes \(the 3 names of "
                       r".*classes.txt\): set --config.model.num_classes=3"):
        config_check.check_evaluation(config)
    config.data.class_names_file = "absent.txt"
    with pytest.raises(config_check.ConfigError, match="config.data.class_names_file='absent.txt': .* does not exist"):
        config_check.check_evaluation(config)


def test_main_stops_on_a_class_count_the_data_does_not_have(tmp_path, two_class_tfds):
    # The demo's 8-class model on 2 classes of prepared videos: stopped before anything is built.
    command = [sys.executable, "main.py", "--config=configs/demo.py", f"--workdir={tmp_path / 'run'}",
               "--config.data.source=tfds", "--config.data.tfds_name=video_folder",
               f"--config.data.tfds_data_dir={two_class_tfds}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "Config error (configs/demo.py with its --config.* overrides): config.model.num_classes=8 but the data has 2 "
        "classes (the class names of TFDS dataset 'video_folder'): set --config.model.num_classes=2")
    assert not os.path.exists(tmp_path / "run")
