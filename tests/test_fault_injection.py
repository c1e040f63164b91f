"""Fault injection end to end (benchmarks/fault_injection.py, small): 5% corrupt JPEG frames, 2%
missing frames, truncated videos, missing folders and bad list lines; training completes on one
epoch with every fault counted by kind and named (file, line, video, frame), evaluation
substitutes frames and masks videos without any, strict mode stops."""
from benchmarks import fault_injection
from input_pipeline import faults
from input_pipeline import sources


def test_faults_at_the_stated_rates_are_substituted_counted_and_named(tmp_path):
    figures = fault_injection.run(str(tmp_path), train_videos=40, val_videos=12, model="tsn", num_frames=4, few=2,
                                  eval_faulty_list=False)
    for split in ("train", "val"):  # The rates, of all the split's frames, or more.
        assert figures["rates"][split]["corrupt_fraction"] >= 0.05
        assert figures["rates"][split]["missing_fraction"] >= 0.02
    assert figures["rates"]["train"]["corrupt_jpegs"] >= 10 and figures["rates"]["train"]["missing_frames"] >= 4
    injected = figures["injected"]
    assert set(injected["train"]) == {faults.CORRUPT_FRAME, faults.MISSING_FRAME, faults.TRUNCATED_VIDEO,
                                      faults.EMPTY_VIDEO, faults.MALFORMED, faults.LABEL_OUT_OF_RANGE}
    assert injected["train"][faults.EMPTY_VIDEO] == 2 and injected["val"][faults.EMPTY_VIDEO] == 1
    assert figures["counted"] == injected  # train: metrics.jsonl; val: the evaluation's log
    assert figures["counted_in_train_log"] == injected["train"]

    assert figures["train_completed"]
    frame_faults = injected["train"][faults.CORRUPT_FRAME] + injected["train"][faults.MISSING_FRAME]
    assert figures["substituted_frames"]["train"] >= frame_faults + 2 * injected["train"][faults.TRUNCATED_VIDEO]
    assert figures["train_clips_with_substitutes"] >= frame_faults // 3
    assert figures["train_skipped_videos"] >= 2  # The missing folders, each met once.

    root = str(tmp_path / "data")
    for split in ("train", "val"):
        examples = figures["examples"][split]
        assert set(examples) == set(injected[split]) | {faults.SUBSTITUTED_FRAME}
        assert all(example.startswith(f"{root}/{split}.txt:") for kind in examples for example in examples[kind])
        assert all(".jpg (" in example and ") replaced by " in example
                   for example in examples[faults.SUBSTITUTED_FRAME])
        for kind, video_dirs in figures["broken_videos"][split].items():
            kind = {fault_injection.GARBAGE: faults.CORRUPT_FRAME,
                    fault_injection.TRUNCATED_JPEG: faults.CORRUPT_FRAME}.get(kind, kind)
            shown = " ".join(examples[kind])
            assert any(f"video {video_dir!r}: {kind}" in shown for video_dir in video_dirs)
    assert "does not exist" in " ".join(figures["examples"]["train"][faults.EMPTY_VIDEO])

    prepared = figures["prepare"]  # tfds_builders.build('video_folder') on 4 mp4 files + 2 unreadable ones
    assert prepared["videos"] == 6 and prepared["written"] == 4 and prepared["wrote"]
    assert prepared["written_frames"] == prepared["expected_frames"]  # Every frame, read back by the tfds source.
    assert len(prepared["expected_frames"]) == 4 and all(5 <= n <= 7 for n in prepared["expected_frames"].values())
    left_out = [message.split()[3] for message in prepared["unreadable"]]  # "Left out video <id> (<path>): <why>"
    assert left_out == prepared["expected_unreadable"] == ["class0/empty.mp4", "class0/truncated.mp4"]
    assert all(f"{tmp_path}/videos/train/{video_id}" in message
               for video_id, message in zip(left_out, prepared["unreadable"]))

    assert figures["eval_faulty_list"]["num_videos"] == 12 - 1  # The video without a folder masked out.
    assert figures["eval_substituted_videos"] == figures["eval_frame_broken_videos"] > 0
    assert figures["intact_predictions_equal"]

    first_bad_line = sources.read_video_list(f"{root}/train.txt", " ", 2)[1][0].message
    assert figures["strict_exit_status"] == 1 and not figures["strict_started_training"]
    assert figures["strict_error"] == ("Data error (configs/demo.py with its --config.* overrides): 5 listed videos "
                                       "left out:\n" + first_bad_line)  # One message, no traceback.
    broken = [video_dir for video_dirs in figures["broken_videos"]["train"].values() for video_dir in video_dirs]
    assert figures["strict_pipeline_exit_status"] == 1  # It exits (the pipeline's threads stopped), no hang.
    assert figures["strict_pipeline_error"].startswith("Data error (configs/demo.py with its --config.* overrides): "
                                                       f"{root}/train_without_bad_lines.txt:")
    assert any(f"video {video_dir!r}" in figures["strict_pipeline_error"] for video_dir in broken)
