"""Prediction: the streaming decoder against the whole-video path, the Predictor API (classify,
classify_many, timeline, features) and the command line."""
import csv
import os
import subprocess
import sys

import av
import jax
import ml_collections
import numpy as np
from flax import nnx
from PIL import Image
import pytest

from blvnet_jax import checkpoint, evaluation, predict, steps
from blvnet_jax.models import create_model
from configs import demo
from input_pipeline import sampling, single_video, transforms, video_files

CLASSES = ["pushing", "pulling", "dropping"]


def tiny_config():
    config = demo.get_config()
    config.model.update(dict(width=8, num_frames=4, num_classes=3))
    config.data.update(dict(crop_size=32, num_clips=2))
    return config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("predict") / "run"
    checkpoint.save_model(str(path), 5, create_model(tiny_config().model, rngs=nnx.Rngs(0)), tiny_config(),
                          class_names=CLASSES)
    return str(path)


@pytest.fixture(scope="module")
def predictor(workdir):
    return predict.Predictor(workdir, batch_videos=3)


def moving_square(num_frames=11, height=40, width=48):
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        x = 2 + 3 * t % (width - 12)
        frames[t, 10:20, x:x + 10] = (255, 200, 0)
        frames[t, 25:35, :] = (t * 7 % 256, 80, 160)
    return frames


def write_folder(folder, frames):
    folder.mkdir()
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{t + 1:05d}.png")
    return str(folder)


def whole_video_views(path, data_config, num_frames):
    """The former prediction path: every frame decoded into memory, then the evaluation views."""
    if os.path.isdir(path):
        frames = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in video_files.frame_files(path)])
    else:
        with av.open(path) as container:
            frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    indices = sampling.eval_indices(data_config, len(frames), num_frames)
    side = transforms.eval_resize_side(data_config.crop_size, data_config.eval_resize_to_crop)
    views = [transforms.eval_views(list(frames[clip]), data_config.crop_size, side,
                                   data_config.num_crops).numpy() for clip in indices]
    return np.concatenate(views), indices


@pytest.mark.parametrize("codec,name", [("mpeg4", "clip.mp4"), ("libvpx", "clip.webm")])
def test_streaming_decode_gives_the_views_of_the_whole_video_path(tmp_path, codec, name):
    # mp4 stores its frame count; webm does not (counted by demuxing); 64x48: the long side is cut.
    frames = moving_square(30, 48, 64)
    path = str(tmp_path / name)
    video_files.write_video(path, frames, codec=codec)
    data = tiny_config().data
    for sampling_name, crops, clips in (("uniform", 3, 2), ("dense", 1, 3)):
        data.update(dict(sampling=sampling_name, num_crops=crops, num_clips=clips))
        expected, expected_indices = whole_video_views(path, data, 4)
        stats = {}
        views, indices = single_video.eval_views(path, data, 4, stats)
        np.testing.assert_array_equal(indices, expected_indices)
        np.testing.assert_array_equal(views, expected)
        assert stats["held_peak"] == stats["decoded_kept"] == len(np.unique(indices))


def test_a_rotated_video_is_seen_upright(tmp_path):
    from test_input_tfds import bright_centre, phone_video
    upright = np.rot90(phone_video(str(tmp_path / "phone.mp4"), rotation=-90), 3)  # Turned clockwise.
    [(_, clips)] = single_video.sampled_clips(str(tmp_path / "phone.mp4"), [np.asarray([[0, 2]])], 32, 3)
    assert clips.shape == (1, 2, 48, 32, 3)
    np.testing.assert_allclose(bright_centre(clips[0, 0]), bright_centre(upright), atol=1)

def test_a_damaged_video_is_sampled_on_the_frames_that_decode(tmp_path):
    from test_input_tfds import damaged_video
    path = str(tmp_path / "damaged.mp4")
    damaged_video(path, [0])
    assert single_video.probe(path).frame_count == 12  # The container's count; 11 frames decode.
    data = tiny_config().data
    views, indices = single_video.eval_views(path, data, 4)
    np.testing.assert_array_equal(indices, sampling.eval_indices(data, 11, 4))
    damaged_video(path, range(12))
    with pytest.raises(single_video.UnreadableVideoError, match="damaged.mp4: no frame decodes"):
        single_video.eval_views(path, data, 4)

def test_a_stream_that_changes_resolution_is_predicted_at_its_first_size(tmp_path):
    from test_input_tfds import resolution_changing_video
    path = str(tmp_path / "recording.ts")
    resolution_changing_video(path)
    with av.open(path) as container:
        count = sum(1 for _ in container.decode(container.streams.video[0]))  # One fewer than the packets.
    [(_, clips)] = single_video.sampled_clips(path, [np.asarray([[0, count - 1]])], 16, count)
    assert clips.shape == (1, 2, 16, 24, 3)  # 48x32 and 48x48 frames, both at 48x32's shape.
    views, _ = single_video.eval_views(path, tiny_config().data, 4)
    assert views.dtype == np.uint8 and views.shape == (2, 4, 32, 32, 3)  # 2 clips x 1 crop.

def test_frame_folder_reads_pils_pixels_and_only_the_sampled_files(tmp_path):
    # Textured JPEGs, where TF's default fast IDCT would not give PIL's pixels.
    frames = np.random.default_rng(0).integers(0, 256, (9, 40, 48, 3), np.uint8)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"{t + 1:05d}.jpg", quality=90)
    official = np.stack([np.asarray(Image.open(tmp_path / f"{t + 1:05d}.jpg").convert("RGB")) for t in range(9)])
    data = tiny_config().data
    expected, _ = whole_video_views(str(tmp_path), data, 4)
    np.testing.assert_array_equal(single_video.eval_views(str(tmp_path), data, 4)[0], expected)
    (tmp_path / "00001.jpg").write_bytes(b"not a jpeg")  # never sampled (1, 3, 5, 7 and 2, 4, 6, 8)
    np.testing.assert_array_equal(single_video.eval_views(str(tmp_path), data, 4)[0], expected)
    with pytest.raises(single_video.UnreadableVideoError, match="00001.jpg: PIL cannot decode it"):
        list(single_video.sampled_clips(str(tmp_path), [np.asarray([[0, 4]])], 40, 9))
    [(_, clips)] = single_video.sampled_clips(str(tmp_path), [np.asarray([[4, 8]])], 40, 9)  # side 40: no resize
    np.testing.assert_array_equal(clips[0], official[[4, 8]])


def test_an_empty_video_file_is_named_as_such(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(single_video.UnreadableVideoError,
                       match=r"empty.mp4: PyAV cannot decode it \(empty file \(0 bytes\)\)$"):
        single_video.probe(str(tmp_path / "empty.mp4"))
    with pytest.raises(ValueError, match=r"^empty file \(0 bytes\)$"):
        video_files.decode_video(str(tmp_path / "empty.mp4"), 64, 90)


def test_a_wrong_frame_count_is_noticed_and_the_video_sampled_again(tmp_path, monkeypatch):
    path = str(tmp_path / "clip.mp4")
    video_files.write_video(path, moving_square(13))
    data = tiny_config().data
    expected, expected_indices = whole_video_views(path, data, 4)
    with pytest.raises(single_video.FrameCountError, match="13 frames decoded, 20 counted"):
        list(single_video.sampled_clips(path, [np.asarray([[0, 1]])], 36, 20))
    monkeypatch.setattr(single_video, "probe", lambda path: single_video.VideoInfo(20, 12.0))
    views, indices = single_video.eval_views(path, data, 4)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(views, expected)


def test_the_streaming_decoder_holds_only_the_frames_of_windows_in_progress(tmp_path):
    path = str(tmp_path / "long.mp4")
    video_files.write_video(path, moving_square(240, 24, 32), fps=12)  # 20 s
    data = tiny_config().data  # 2 clips of 4 frames per window
    ranges = single_video.windows(240, 12.0, 2.0, 1.0)
    requests = single_video.window_requests(data, ranges, 4)
    stats, served = {}, []
    for number, clips in single_video.sampled_clips(path, requests, 36, 240, stats):
        served.append((number, stats["decoded_kept"]))
        assert clips.shape == (2, 4, 36, 48, 3)
    assert [n for n, _ in served] == list(range(len(ranges))) == list(range(19))
    sampled = len(np.unique(np.concatenate(requests)))
    assert stats["decoded_kept"] == sampled
    # Windows overlap by half: at most two windows' frames (8 each) are ever held, not 240.
    assert stats["held_peak"] <= 16
    assert served[0][1] <= 16  # the first window is handed over before the rest is decoded


def test_window_boundaries():
    np.testing.assert_array_equal(single_video.windows(36, 12.0, 1.0, 0.5),
                                  [[0, 12], [6, 18], [12, 24], [18, 30], [24, 36]])
    # 29.97 fps: 30-frame windows starting at round(k * 11.988); the last that fits starts at 60.
    np.testing.assert_array_equal(single_video.windows(95, 29.97, 1.0, 0.4),
                                  [[0, 30], [12, 42], [24, 54], [36, 66], [48, 78], [60, 90]])
    np.testing.assert_array_equal(single_video.windows(5, 12.0, 1.0, 0.5), [[0, 5]])
    with pytest.raises(ValueError, match="must be positive"):
        single_video.windows(5, 12.0, 0.0, 0.5)


def test_classify_equals_the_evaluation_step_on_the_whole_video_views(tmp_path, workdir, predictor):
    path = str(tmp_path / "clip.mp4")
    video_files.write_video(path, moving_square(30, 48, 64))
    result = predictor.classify(path, top_k=3)

    model, metadata = checkpoint.restore_model(workdir)
    config = ml_collections.ConfigDict(metadata["config"])
    views, indices = whole_video_views(path, config.data, config.model.num_frames)
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    logits = jax.jit(steps.make_eval_step(graphdef))(params, batch_stats, views)
    expected = evaluation.average_views(np.asarray(logits, np.float64), len(views))[0]
    np.testing.assert_allclose(result.probabilities, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(result.views, views)
    np.testing.assert_array_equal(result.indices, indices)
    assert [name for name, _ in result.top] == [CLASSES[c] for c in np.argsort(-expected)]
    # The features are what the head classifies: head(features of each view) = the view's logits.
    features, view_logits = predictor.run(views, len(views))
    np.testing.assert_allclose(view_logits, np.asarray(logits), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(model.head(features)), np.asarray(logits), rtol=1e-5, atol=1e-6)
    assert result.features.shape == (model.backbone.num_features,) and result.features.dtype == np.float32
    np.testing.assert_allclose(result.features, features.mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(predictor.features(path), result.features)
    assert predict.predict(workdir, path, top_k=1)["top"] == result.top[:1]
    predict.save_png(str(tmp_path / "out.png"), result, path)
    assert os.path.getsize(tmp_path / "out.png") > 0


def test_classify_many_reports_an_unreadable_video_and_goes_on(tmp_path, predictor):
    paths = []
    for i in range(4):
        paths.append(str(tmp_path / f"video{i}.mp4"))
        video_files.write_video(paths[-1], moving_square(12 + 5 * i))
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    paths.insert(2, str(tmp_path / "broken.mp4"))
    paths.append(str(tmp_path / "missing.mp4"))
    results = list(predictor.classify_many(paths, top_k=2))  # batches of 3: 2 + broken, 2 + missing
    assert [r.path for r in results] == paths
    assert "broken.mp4: PyAV cannot decode it" in results[2].error and results[2].top is None
    assert "missing.mp4 is neither a video file nor a frame folder" in results[5].error
    for result in results[:2] + results[3:5]:
        single = predictor.classify(result.path, top_k=2)
        assert result.error is None and result.views is None
        np.testing.assert_allclose(result.probabilities, single.probabilities, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(result.features, single.features, rtol=1e-5, atol=1e-6)


def test_timeline_windows_are_classified_like_videos_of_their_frames(tmp_path, predictor):
    frames = moving_square(36)
    folder = write_folder(tmp_path / "frames", frames)
    with pytest.raises(single_video.UnreadableVideoError, match="frame rate is unknown"):
        predictor.timeline(folder, 1.0, 0.5)
    timeline = predictor.timeline(folder, window_seconds=1.0, stride_seconds=0.5, fps=12.0)
    np.testing.assert_array_equal(timeline.frames, [[0, 12], [6, 18], [12, 24], [18, 30], [24, 36]])
    np.testing.assert_allclose(timeline.seconds, timeline.frames / 12.0)
    assert timeline.probabilities.shape == (5, 3)
    for (start, end), probabilities in zip(timeline.frames, timeline.probabilities):
        window = write_folder(tmp_path / f"window{start}", frames[start:end])
        np.testing.assert_allclose(probabilities, predictor.classify(window).probabilities, rtol=1e-5, atol=1e-7)
    assert [top[0][0] for top in timeline.top(1)] == [CLASSES[c] for c in timeline.probabilities.argmax(1)]
    predict.save_timeline_png(str(tmp_path / "timeline.png"), timeline)
    assert os.path.getsize(tmp_path / "timeline.png") > 0


def test_collect_videos_of_a_folder_a_list_and_the_users_mistakes(tmp_path):
    (tmp_path / "set" / "b").mkdir(parents=True)
    for name in ("set/a.mp4", "set/b/c.webm", "set/notes.txt"):
        (tmp_path / name).write_bytes(b"")
    write_folder(tmp_path / "set" / "frames", moving_square(2))
    (tmp_path / "set" / ".ipynb_checkpoints").mkdir()
    write_folder(tmp_path / "set" / ".ipynb_checkpoints" / "frames", moving_square(2))  # Hidden: not searched.
    root = str(tmp_path / "set")
    videos, found_root = predict.collect_videos(root, None)
    assert videos == [f"{root}/a.mp4", f"{root}/b/c.webm", f"{root}/frames"] and found_root == root
    assert predict.features_file("out", f"{root}/b/c.webm", root) == "out/b/c.npy"
    assert predict.features_file("out", f"{root}/frames", root) == "out/frames.npy"
    (tmp_path / "list.txt").write_text(f"# videos\r\n{root}/a.mp4\r\n\r\n{root}/b/c.webm\r\n", encoding="utf-8-sig")
    assert predict.collect_videos(None, str(tmp_path / "list.txt")) == ([f"{root}/a.mp4", f"{root}/b/c.webm"], root)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        predict.collect_videos(str(tmp_path / "nothing.mp4"), None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no video in the folder"):
        predict.collect_videos(str(tmp_path / "empty"), None)


def run_predict(*args):
    return subprocess.run([sys.executable, "-m", "blvnet_jax.predict", *args], capture_output=True, text=True,
                          timeout=300, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_command_line_folder_to_csv_and_features_and_a_timeline(tmp_path, workdir):
    folder = tmp_path / "videos"
    (folder / "sub").mkdir(parents=True)
    for name, length in (("a.mp4", 12), ("sub/b.mp4", 20)):
        video_files.write_video(str(folder / name), moving_square(length))
    (folder / "bad, name.mp4").write_bytes(b"not a video")
    result = run_predict(f"--workdir={workdir}", f"--video={folder}", f"--output_csv={tmp_path / 'out.csv'}",
                         f"--features={tmp_path / 'features'}", "--top_k=2", "--batch_videos=2")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "out.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["video"] for row in rows] == [str(folder / n) for n in ("a.mp4", "bad, name.mp4", "sub/b.mp4")]
    assert rows[1]["error"].startswith(f"{folder / 'bad, name.mp4'}: PyAV cannot decode it") and not rows[1]["top1"]
    assert rows[0]["top1"] in CLASSES and float(rows[0]["p1"]) >= float(rows[0]["p2"]) and not rows[0]["error"]
    assert np.load(tmp_path / "features" / "sub" / "b.npy").shape == (256,)  # width 8 x 32
    assert sorted(os.listdir(tmp_path / "features")) == ["a.npy", "sub"]
    assert "1 of 3 videos could not be read" in result.stdout
    assert not [line for line in result.stderr.splitlines() if "/orbax/" in line or "checkpoint_manager.py" in line
                or "composite_checkpoint_handler.py" in line]  # no library chatter (blvnet_jax.quiet)

    result = run_predict(f"--workdir={workdir}", f"--video={folder / 'sub' / 'b.mp4'}", "--window_seconds=1",
                         "--stride_seconds=0.5", f"--output_csv={tmp_path / 'timeline.csv'}",
                         f"--save_png={tmp_path / 'timeline.png'}")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "timeline.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(row["window_start_s"], row["window_end_s"]) for row in rows] == [("0.000", "1.000"), ("0.500", "1.500")]
    assert os.path.getsize(tmp_path / "timeline.png") > 0

    result = run_predict(f"--workdir={workdir}", f"--video={folder / 'bad, name.mp4'}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"Video error: {folder / 'bad, name.mp4'}: PyAV cannot")
    assert "Traceback" not in result.stderr
