"""Bad input: broken list lines, missing, corrupt and truncated frames, missing folders; frames
substituted, videos skipped, the stop rule, strict mode, counts that name each fault, check_data."""
import os
import shutil

import numpy as np
from PIL import Image
import pytest

from configs import data_defaults
import input_pipeline
from input_pipeline.sources import create_source
from input_pipeline import check_data
from input_pipeline import faults
from input_pipeline import sampling
from input_pipeline import sources
from input_pipeline import synthetic
from tests.test_input_synthetic import tiny_synthetic_config

# (video, 0-based frame index broken, how, its nearest readable frame): frame files are 1-based.
BROKEN = ((0, 0, "missing", 1), (1, 0, "garbage", 1), (2, 2, "truncated", 1))
BROKEN_DIRS = ("frames/train/00_0000", "frames/train/00_0001", "frames/train/00_0002")


def _frame(root, entry, index):
    return os.path.join(root, entry.video_dir, f"{entry.start_frame + index:05d}.jpg")


@pytest.fixture(scope="module")
def broken_config(tmp_path_factory):
    """12 training videos of 8-12 frames, 3 of them with a broken frame (`BROKEN`); the
    validation list is the training list plus a video whose folder does not exist. The
    config's `repaired_root` holds the same data with each broken frame a copy of its nearest
    readable neighbour."""
    root = str(tmp_path_factory.mktemp("broken"))
    paths = synthetic.write_synthetic_dataset(os.path.join(root, "data"), tiny_synthetic_config())
    repaired = shutil.copytree(paths["root"], os.path.join(root, "repaired"))
    entries, _ = sources.read_video_list(paths["train_list"])
    for video, index, how, nearest in BROKEN:
        frame = _frame(paths["root"], entries[video], index)
        shutil.copy(_frame(repaired, entries[video], nearest), _frame(repaired, entries[video], index))
        if how == "missing":
            os.remove(frame)
        elif how == "garbage":
            with open(frame, "wb") as f:
                f.write(b"this is not a jpeg")
        else:
            with open(frame, "rb+") as f:
                f.truncate(200)
    for folder in (paths["root"], repaired):
        with open(os.path.join(folder, "train.txt")) as f:
            lines = f.read()
        with open(os.path.join(folder, "val.txt"), "w") as f:
            f.write(lines + "frames/train/missing_folder 1 8 0\n")
    config = data_defaults.get_data_config()
    config.update(root=paths["root"], train_list="train.txt", val_list="val.txt",
                  class_names_file=paths["class_names_file"], crop_size=16)
    return config, repaired


def _repaired(config, repaired_root):
    config = config.copy_and_resolve_references()
    config.root = repaired_root
    return config


def test_nearest_readable_frame_rule():
    readable = lambda frames: lambda i: i in frames
    assert faults.nearest_readable(5, 10, readable({4, 6})) == 4  # Ties: the earlier frame.
    assert faults.nearest_readable(5, 10, readable({7, 2})) == 7
    assert faults.nearest_readable(0, 10, readable({9})) == 9
    assert faults.nearest_readable(3, 10, readable(set())) is None
    checked = []
    used = faults.substitutes(np.array([0, 1, 2, 4]), 6, lambda i: checked.append(i) or i in {1, 5})
    np.testing.assert_array_equal(used, [1, 1, 1, 5])
    assert sorted(checked) == sorted(set(checked))  # Each frame checked once.
    with pytest.raises(faults.NoSubstitute, match="none of the 6 frames"):
        faults.substitutes(np.array([0, 1]), 6, lambda i: False)
    with pytest.raises(faults.NoSubstitute, match="every sampled frame is readable"):
        faults.substitutes(np.array([0, 1]), 6, lambda i: True)


def test_list_problems_name_file_and_line(tmp_path):
    list_file = tmp_path / "list.txt"
    list_file.write_text("a 1 10 0\nb 1 x 0\nc 1 10\nd 5 4 1\ne 1 10 7\nf;1;10;1\n\ng 1 10 3\n")
    entries, problems = sources.read_video_list(str(list_file), " ", num_classes=4)
    assert [entry.video_dir for entry in entries] == ["a", "g"]
    assert entries[1].where == f"{list_file}:8"
    assert [problem.message.split(": ")[0] for problem in problems] == [
        f"{list_file}:{line}" for line in (2, 3, 4, 5, 6)]
    assert [problem.kind for problem in problems] == [faults.MALFORMED] * 3 + [
        faults.LABEL_OUT_OF_RANGE, faults.MALFORMED]
    assert "integers" in problems[0].message and "4 fields" in problems[1].message
    assert "empty" in problems[2].message and "label 7" in problems[3].message


def test_a_video_listed_again_is_kept_once_or_left_out_when_its_labels_differ(tmp_path):
    list_file = tmp_path / "list.txt"
    list_file.write_text("a 1 10 0\nb 1 10 1\na 1 10 0\nc 1 10 0\nd 1 10 1\nc 1 10 1\na 1 10 0\n")
    entries, problems = sources.read_video_list(str(list_file), " ", num_classes=2)
    assert [entry.where for entry in entries] == [f"{list_file}:{line}" for line in (1, 2, 5)]
    assert [(problem.kind, problem.message) for problem in problems] == [
        (faults.REPEATED_VIDEO, f"{list_file}:3: video 'a' is listed before (lines 1, 3, 7)"),
        (faults.REPEATED_VIDEO, f"{list_file}:4: video 'c' is listed with labels [0, 1] (lines 4, 6); give each "
                                "video one line"),
        (faults.REPEATED_VIDEO, f"{list_file}:6: video 'c' is listed with labels [0, 1] (lines 4, 6); give each "
                                "video one line"),
        (faults.REPEATED_VIDEO, f"{list_file}:7: video 'a' is listed before (lines 1, 3, 7)")]


def test_videos_in_both_the_train_and_val_lists_are_named_before_training(broken_config, caplog):
    config = broken_config[0]
    sources.preflight(config)
    assert caplog.messages == [f"12 videos of the val list are in the train list too (e.g. {config.root}/val.txt:1, "
                               f"{config.root}/train.txt:1): validation counts videos trained on."]


def test_list_and_class_files_saved_by_windows_editors_read_the_same(tmp_path):
    # A byte-order mark and CRLF line ends (Notepad, Excel): the first video and class keep their names.
    (tmp_path / "list.txt").write_text("frames/a 1 10 0\r\nframes/b 1 12 1\r\n", encoding="utf-8-sig")
    (tmp_path / "classes.txt").write_text("cat\r\ndog\r\n", encoding="utf-8-sig")
    entries, problems = sources.read_video_list(str(tmp_path / "list.txt"), " ", num_classes=2)
    assert [(entry.video_dir, entry.num_frames, entry.label) for entry in entries] == [
        ("frames/a", 10, 0), ("frames/b", 12, 1)] and not problems
    assert sources.read_class_names(str(tmp_path / "classes.txt")) == ["cat", "dog"]


def test_tsn_lists_read_as_the_official_lists_of_the_same_videos_and_either_names_the_other(tmp_path, broken_config):
    # TSN, TSM and MMAction2 list `<video dir> <frames> <label>`: frames 1 to <frames>.
    config = broken_config[0].copy_and_resolve_references()
    official = sources.read_video_list(os.path.join(config.root, config.train_list))[0]
    (tmp_path / "tsn.txt").write_text("".join(f"{entry.video_dir} {entry.num_frames} {entry.label}\n"
                                              for entry in official))
    config.update(train_list=str(tmp_path / "tsn.txt"), list_format="tsn")
    assert sources.preflight(config, ("train",)) == (4, f"the 4 names of {config.class_names_file}")
    tsn = create_source(config).videos("train")
    assert tsn.ids == [entry.video_dir for entry in official] and not tsn.problems
    np.testing.assert_array_equal(tsn.num_frames, [entry.num_frames for entry in official])
    np.testing.assert_array_equal(tsn.labels, [entry.label for entry in official])
    assert tsn.frame_paths(0, [0, 1]) == [_frame(config.root, official[0], 0), _frame(config.root, official[0], 1)]

    (tmp_path / "mixed.txt").write_text("a 10 1\nb 1 10 1\nc 0 1\nd ten 1\n")
    entries, problems = sources.read_video_list(str(tmp_path / "mixed.txt"), list_format="tsn")
    assert [(entry.video_dir, entry.start_frame, entry.num_frames, entry.label) for entry in entries] == [
        ("a", 1, 10, 1)]
    assert [problem.message.split(": ", 1)[1] for problem in problems] == [
        "expected 3 fields '<video dir> <frames> <label>' separated by ' ', got 4; set config.data.list_separator, or "
        "config.data.list_format='official' for '<video dir> <start frame> <end frame> <label>' lines: 'b 1 10 1'",
        "0 frames: an empty video: 'c 0 1'", "the frame numbers and the label must be integers: 'd ten 1'"]
    config.list_format = "official"  # Every line of the TSN list is left out: the error says what to set.
    with pytest.raises(faults.DataError, match=(
            r"^No usable video in the train split: 12 listed videos left out \(e.g. .*tsn.txt:1: expected 4 fields .* "
            r"got 3; .*list_format='tsn' for '<video dir> <frames> <label>' lines: 'frames/train/00_0000 \d+ 0'\)")):
        sources.preflight(config, ("train",))
    config.list_format = "mmaction"
    with pytest.raises(ValueError, match="^config.data.list_format='mmaction': use 'official' .* or 'tsn'"):
        sources.preflight(config, ("train",))


def test_a_list_or_class_file_that_is_not_utf8_is_named_with_its_line(tmp_path):
    # Windows' legacy code page, as older editors and Excel's plain 'CSV' save accents.
    (tmp_path / "list.txt").write_bytes("a 1 10 0\r\ncafé 1 10 1\r\n".encode("cp1252"))
    (tmp_path / "classes.txt").write_bytes("cat\ncafé\n".encode("cp1252"))
    with pytest.raises(ValueError, match=rf"^{tmp_path}/list.txt:2 is not UTF-8 text \(invalid continuation byte: "
                                         r"byte 0xe9\); save the file as UTF-8$"):
        sources.read_video_list(str(tmp_path / "list.txt"))
    with pytest.raises(ValueError, match=rf"^{tmp_path}/classes.txt:2 is not UTF-8"):
        sources.read_class_names(str(tmp_path / "classes.txt"))


def test_strict_mode_rejects_bad_list_lines(tmp_path, broken_config):
    config = broken_config[0].copy_and_resolve_references()
    config.train_list = str(tmp_path / "list.txt")
    (tmp_path / "list.txt").write_text("frames/train/00_0003 1 8 0\nbad line\n")
    iterator = input_pipeline.create_train_dataset(create_source(config), num_frames=4, global_batch_size=1, seed=0)
    assert iterator.stats.kind_examples == {faults.MALFORMED: [
        f"{config.train_list}:2: expected 4 fields '<video dir> <start frame> <end frame> <label>' separated by ' ', "
        "got 2; set config.data.list_separator, or config.data.list_format='tsn' for '<video dir> <frames> <label>' "
        "lines: 'bad line'"]}
    assert iterator.stats.kinds == {faults.MALFORMED: 1}
    config.strict = True
    with pytest.raises(ValueError, match="list.txt:2"):
        input_pipeline.create_train_dataset(create_source(config), num_frames=4, global_batch_size=1, seed=0)


def test_training_substitutes_the_nearest_readable_frame(broken_config):
    """8-frame clips of 8-12 frame videos read frames 0-7: every broken frame, in both epochs."""
    config, repaired_root = broken_config
    iterator = input_pipeline.create_train_dataset(create_source(config), num_frames=8, global_batch_size=4, seed=0)
    batches = [next(iterator) for _ in range(6)]  # Two epochs: each broken frame met twice.
    assert all(batch["video"].shape == (4, 8, 16, 16, 3) for batch in batches)
    stats = iterator.stats
    assert stats.unreadable == 0
    assert stats.kinds == {faults.MISSING_FRAME: 1, faults.CORRUPT_FRAME: 2, faults.SUBSTITUTED_FRAME: 6}
    substituted = stats.kind_examples[faults.SUBSTITUTED_FRAME]
    entries = create_source(config).videos("train").entries
    for video, index, _, nearest in BROKEN:
        broken, used = _frame(config.root, entries[video], index), _frame(config.root, entries[video], nearest)
        assert f"{entries[video].where} video {entries[video].video_dir!r}: {broken} (" in " ".join(substituted)
        assert f"{broken} (corrupt frame) replaced by {used}" in " ".join(substituted) or \
            f"{broken} (missing frame) replaced by {used}" in " ".join(substituted)
    assert all(message.startswith(os.path.join(config.root, "train.txt:")) for kind in stats.kind_examples
               for message in stats.kind_examples[kind])
    # The same pixels as data whose broken frames are copies of their nearest readable frame.
    clean = input_pipeline.create_train_dataset(create_source(_repaired(config, repaired_root)), num_frames=8,
                                                global_batch_size=4, seed=0)
    for batch in batches:
        expected = next(clean)
        for key in batch:
            np.testing.assert_array_equal(batch[key], expected[key])
    assert clean.stats.kinds == {}
    resumed = input_pipeline.create_train_dataset(create_source(config), num_frames=8, global_batch_size=4, seed=0,
                                                  start_step=4)
    for batch in batches[4:]:
        np.testing.assert_array_equal(next(resumed)["video"], batch["video"])


def test_strict_training_stops_at_an_unreadable_frame(broken_config):
    config = broken_config[0].copy_and_resolve_references()
    config.strict = True
    iterator = input_pipeline.create_train_dataset(create_source(config), num_frames=8, global_batch_size=12, seed=0)
    with pytest.raises(ValueError, match=r"frames/train/00_000[012]': (missing|corrupt) frame .*0000[13]\.jpg"):
        next(iterator)


def _without_folders(config, tmp_path, missing):
    """`config` with a training list whose videos of `missing` (indices) point to folders that do not exist."""
    config = config.copy_and_resolve_references()
    with open(os.path.join(config.root, "train.txt")) as f:
        lines = f.read().splitlines()
    lines = ["missing/" + line if number in missing else line for number, line in enumerate(lines)]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    config.train_list = str(tmp_path / "list.txt")
    return config


def test_training_takes_the_next_readable_video_and_stops_past_the_fault_fraction(tmp_path, broken_config):
    """8 of 12 listed videos have no folder: an example whose video is skipped takes the next
    readable video of its epoch's order, however many follow it unreadable."""
    config = _without_folders(broken_config[0], tmp_path, {n for n in range(12) if n % 3})
    config.max_fault_fraction = 0.9
    train = lambda: input_pipeline.create_train_dataset(create_source(config), num_frames=4, global_batch_size=4,
                                                        seed=0)
    iterator = train()
    batches = [next(iterator) for _ in range(30)]  # 120 examples, 2/3 of their videos missing
    order, labels = sources.TrainOrder(12, seed=0), create_source(config).videos("train").labels
    first_readable = [next(i for i, video in enumerate(order.candidates(slot, 12)) if video % 3 == 0)
                      for slot in range(120)]
    videos = [order.candidates(slot, 12)[i] for slot, i in enumerate(first_readable)]
    np.testing.assert_array_equal(np.concatenate([batch["label"] for batch in batches]), labels[videos])
    assert max(first_readable) > 4  # Some examples read a video past the 4 after their own.
    assert iterator.stats.unreadable == sum(first_readable)
    assert iterator.stats.kinds[faults.EMPTY_VIDEO] == 8
    assert "does not exist" in iterator.stats.kind_examples[faults.EMPTY_VIDEO][0]
    config.max_fault_fraction = 0.5
    iterator = train()
    with pytest.raises(faults.DataError) as stopped:
        for step in range(30):
            next(iterator)
    assert step * 4 > 50  # Never before more than half a window of examples failed.
    message = str(stopped.value)
    assert "of the last " in message and "config.data.max_fault_fraction=0.5 of a window of 100" in message
    assert "8 x empty video, e.g. " + config.train_list + ":" in message


def test_training_stops_when_more_videos_in_a_row_fail_than_the_fault_fraction_allows(tmp_path, broken_config):
    """The first 5 videos of epoch 0's order have no folder: example 0 would have to read the
    sixth, but then more than 0.04 x 100 examples in a row would fail."""
    missing = set(sources.TrainOrder(12, seed=0).candidates(0, 5))
    config = _without_folders(broken_config[0], tmp_path, missing)
    config.max_fault_fraction = 0.04
    iterator = input_pipeline.create_train_dataset(create_source(config), num_frames=4, global_batch_size=4, seed=0)
    with pytest.raises(faults.DataError, match=r"none of 5 videos in a row of the shuffled train split \(so more "
                       r"than config.data.max_fault_fraction=0.04 of a window of 100 examples would fail\) could"):
        next(iterator)
    config.max_fault_fraction = 0.05
    iterator = input_pipeline.create_train_dataset(create_source(config), num_frames=4, global_batch_size=4, seed=0)
    sixth = sources.TrainOrder(12, seed=0).candidates(0, 6)[5]
    assert next(iterator)["label"][0] == create_source(config).videos("train").labels[sixth]


def test_evaluation_substitutes_frames_and_masks_videos_without_any(broken_config):
    config, repaired_root = broken_config
    iterator = input_pipeline.create_eval_dataset(create_source(config), num_frames=8, batch_size=5)
    batches = list(iterator)
    valid = np.concatenate([batch["video_index"][batch["mask"]] for batch in batches])
    np.testing.assert_array_equal(valid, np.arange(12))  # Video 12, with no folder, masked out.
    entries = create_source(config).videos("val").entries
    hits = {video: int(np.sum(sampling.uniform_eval_indices(entries[video].num_frames, 8, 1) == index))
            for video, index, _, _ in BROKEN}
    kinds = {faults.EMPTY_VIDEO: 1, faults.SUBSTITUTED_FRAME: sum(hits.values()),
             faults.MISSING_FRAME: min(hits[0], 1), faults.CORRUPT_FRAME: min(hits[1], 1) + min(hits[2], 1)}
    assert iterator.stats.unreadable == 1
    assert iterator.stats.kinds == {kind: count for kind, count in kinds.items() if count}
    assert "frames/train/missing_folder" in iterator.stats.kind_examples[faults.EMPTY_VIDEO][0]
    clean = list(input_pipeline.create_eval_dataset(create_source(_repaired(config, repaired_root)), num_frames=8,
                                                      batch_size=5))
    for batch, expected in zip(batches, clean):
        for key in batch:
            np.testing.assert_array_equal(batch[key], expected[key])


def test_strict_evaluation_in_one_of_several_processes_holds_its_error_to_the_end(broken_config):
    """One process raising alone would leave the others waiting in a collective: with several processes the
    iterator hands every batch over and keeps its first error for the caller to raise on all of them."""
    config = broken_config[0].copy_and_resolve_references()
    config.strict = True
    with pytest.raises(faults.DataError, match="config.data.strict is on"):
        list(input_pipeline.create_eval_dataset(create_source(config), num_frames=8, batch_size=5))
    iterator = input_pipeline.create_eval_dataset(create_source(config), num_frames=8, batch_size=3, process_index=0,
                                                  process_count=2)  # videos 0, 2, ..., 12 (12: no folder)
    batches = list(iterator)
    assert len(batches) == input_pipeline.eval_batch_count(13, 3, 2)
    np.testing.assert_array_equal(np.concatenate([batch["video_index"] for batch in batches])[:7], np.arange(0, 13, 2))
    assert isinstance(iterator.error, faults.DataError) and "config.data.strict is on" in str(iterator.error)


def test_video_faults_tell_truncated_and_empty_videos_from_missing_frames(tmp_path):
    """a: frame 3 missing; b: frame 2 corrupt, frames 4-6 missing; c: no frame at all."""
    (tmp_path / "list.txt").write_text("a 1 6 0\nb 1 6 0\nc 1 6 0\n")
    for video, frames in (("a", (1, 2, 4, 5, 6)), ("b", (1, 2, 3)), ("c", ())):
        (tmp_path / video).mkdir()
        for number in frames:
            Image.new("RGB", (8, 8)).save(tmp_path / video / f"{number:05d}.jpg")
    (tmp_path / "b" / "00002.jpg").write_bytes(b"not a jpeg")
    config = data_defaults.get_data_config()
    config.update(root=str(tmp_path), train_list="list.txt")
    folders = create_source(config).videos("train")
    found = [folders.video_faults(video) for video in range(3)]
    where = lambda line, video: f"{tmp_path}/list.txt:{line} video {video!r}: "
    assert found[0] == [faults.Fault(faults.MISSING_FRAME, f"{tmp_path}/a/00003.jpg",
                                     where(1, "a") + f"missing frame {tmp_path}/a/00003.jpg")]
    assert [fault.kind for fault in found[1]] == [faults.CORRUPT_FRAME, faults.TRUNCATED_VIDEO]
    assert found[1][0].message == where(2, "b") + (
        f"corrupt frame {tmp_path}/b/00002.jpg (cannot identify image file '{tmp_path}/b/00002.jpg')")
    assert found[1][1].message == where(2, "b") + (
        f"truncated video: frames 4-6 of 6 are missing ({tmp_path}/b/00004.jpg ...)")
    assert found[2] == [faults.Fault(faults.EMPTY_VIDEO, "c", where(3, "c") + (
        f"empty video: none of its 6 frames is on disk ({tmp_path}/c/00001.jpg ...)"))]
    # Frames read in training: a tail past the last frame on disk is a truncated video.
    assert [fault.kind for fault in folders.frame_faults(1, 4)] == [faults.TRUNCATED_VIDEO]
    assert [fault.kind for fault in folders.frame_faults(0, 2)] == [faults.MISSING_FRAME]
    assert folders.frame_faults(0, 1) == []
    shutil.rmtree(tmp_path / "c")
    assert "empty video: its folder" in create_source(config).videos("train").video_faults(2)[0].message


def test_check_data_reports_every_problem_and_counts_them_by_kind(broken_config):
    config = broken_config[0]
    num_videos, problems = check_data.check_split(config, "train", workers=2)
    assert num_videos == 12
    assert [kind for kind, _ in problems] == [faults.MISSING_FRAME, faults.CORRUPT_FRAME, faults.CORRUPT_FRAME]
    for (_, message), video_dir in zip(problems, BROKEN_DIRS):
        assert video_dir in message and message.startswith(os.path.join(config.root, "train.txt:"))
    lines = check_data.report(problems, {"train": 12, "val": 4}).splitlines()
    assert lines[:3] == [message for _, message in problems]
    assert lines[3] == "3 problems in 16 videos (train 12, val 4): 1 missing frame, 2 corrupt frame."
    assert check_data.report([], {"train": 12}) == "No problem found in 12 videos (train 12)."


def test_check_data_reports_a_bad_list_line_once(tmp_path, broken_config, caplog):
    config = broken_config[0].copy_and_resolve_references()
    with open(os.path.join(config.root, "train.txt")) as f:
        (tmp_path / "list.txt").write_text(f.read() + "frames/train/00_0000 1 eight 0\n")
    config.train_list = str(tmp_path / "list.txt")
    _, problems = check_data.check_split(config, "train", workers=2)
    assert [kind for kind, _ in problems].count(faults.MALFORMED) == 1
    assert "list.txt:13" not in caplog.text  # The report names it; no log repeats it.


def test_missing_list_file_says_what_to_set(broken_config):
    config = broken_config[0].copy_and_resolve_references()
    config.val_list = "nowhere.txt"
    with pytest.raises(FileNotFoundError, match="config.data.train_list"):
        create_source(config).videos("val")


def test_load_in_order_marks_each_failed_load_in_place_and_ends_a_group_whose_loads_all_fail():
    """Loads fail unless key % 3 == 2 (the log of -1 or 0 is not finite): every key comes out once,
    in order, a failed one as its placeholder; the last group, all failures, still ends."""
    from input_pipeline.tensorflow_cpu import tf
    load = lambda key: {"key": key, "value": tf.debugging.check_numerics(
        tf.math.log(tf.cast(key % 3, tf.float32) - 1.0), "not finite")}
    placeholder = lambda key: {"key": key, "value": tf.constant(-1.0)}
    groups = tf.data.Dataset.from_tensor_slices(tf.ragged.constant([[0, 1, 2], [3, 4, 5], [6, 7], [9, 12]], tf.int64))
    out = list(faults.load_in_order(groups, load, placeholder, num_parallel_calls=4).as_numpy_iterator())
    keys = [0, 1, 2, 3, 4, 5, 6, 7, 9, 12]
    assert [element["key"] for element in out] == keys
    assert [bool(element["loaded"]) for element in out] == [key % 3 == 2 for key in keys]
    assert [float(element["value"]) for element in out] == [0.0 if key % 3 == 2 else -1.0 for key in keys]
