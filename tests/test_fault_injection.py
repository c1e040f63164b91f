"""Fault injection end to end (benchmarks/fault_injection.py at its smallest): every injected fault
counted by kind, training completes, the clean part evaluates as a clean list does, strict stops."""
from benchmarks import fault_injection
from input_pipeline import sources
from input_pipeline import video_list


def test_injected_faults_are_counted_and_leave_the_clean_evaluation_unchanged(tmp_path):
    figures = fault_injection.run(str(tmp_path), train_videos=40, val_videos=12, model="tsn", few=2,
                                  eval_faulty_list=False)
    assert figures["injected"] == {
        "train": {sources.CORRUPT_FRAME: 2, sources.MISSING_FRAME: 1, sources.TRUNCATED_VIDEO: 2,
                  sources.EMPTY_VIDEO: 2, video_list.MALFORMED: 3, video_list.LABEL_OUT_OF_RANGE: 2},
        "val": {sources.CORRUPT_FRAME: 2, sources.MISSING_FRAME: 1, sources.TRUNCATED_VIDEO: 1,
                sources.EMPTY_VIDEO: 1, video_list.MALFORMED: 2, video_list.LABEL_OUT_OF_RANGE: 1}}
    assert figures["corrupt_jpegs"]["train"] == {fault_injection.GARBAGE: 1, fault_injection.TRUNCATED_JPEG: 1}
    assert figures["counted"] == figures["injected"]  # train: metrics.jsonl; val: the evaluation's log
    assert figures["counted_in_train_log"] == figures["injected"]["train"]

    root = str(tmp_path / "data")
    for split in ("train", "val"):
        examples = figures["examples"][split]
        assert set(examples) == set(figures["injected"][split])
        assert all(example.startswith(f"{root}/{split}.txt:") for kind in examples for example in examples[kind])
        for kind, video_dirs in figures["broken_videos"][split].items():
            kind = {fault_injection.GARBAGE: sources.CORRUPT_FRAME,
                    fault_injection.TRUNCATED_JPEG: sources.CORRUPT_FRAME}.get(kind, kind)
            shown = " ".join(examples[kind])
            assert any(f"video {video_dir!r}: {kind}" in shown for video_dir in video_dirs)

    prepared = figures["prepare"]
    assert prepared["videos"] == 6 and prepared["written"] == 4
    assert [message.split(": ")[0] for message in prepared["unreadable"]] == prepared["expected_unreadable"]

    assert figures["train_completed"]
    assert figures["eval_clean_list"]["num_videos"] == 12 - 5
    assert figures["eval_equal"] and figures["predictions_equal"]

    first_bad_line = video_list.read_video_list(f"{root}/train.txt", " ", 2)[1][0].message
    assert figures["strict_exit_status"] == 1 and not figures["strict_started_training"]
    assert figures["strict_error"] == "ValueError: 5 bad list lines:\n" + first_bad_line
    broken = [video_dir for video_dirs in figures["broken_videos"]["train"].values() for video_dir in video_dirs]
    assert figures["strict_pipeline_error"].startswith(f"{root}/train_without_bad_lines.txt:")
    assert any(f"video {video_dir!r}" in figures["strict_pipeline_error"] for video_dir in broken)
