"""List files and class-name files of the `frames` layout (official code, Something-Something V1).

A list line is `<video dir> <start frame> <end frame> <label>`; frames are numbered from 1 and
named by an `image_template` such as '{:05d}.jpg'. A line that does not parse is a
'malformed list line', one whose label is outside [0, num_classes) a 'label out of range'
(`faults`).
"""
import dataclasses
import os

from input_pipeline import faults


@dataclasses.dataclass(frozen=True)
class VideoEntry:
    """One video of a list file: its frames are `start_frame .. start_frame + num_frames - 1`."""
    video_dir: str
    start_frame: int
    num_frames: int
    label: int
    where: str  # 'list.txt:12', names the video in messages.

    def frame_path(self, root, image_template, index):
        """Path of the frame at 0-based `index` within the video."""
        return os.path.join(root, self.video_dir, image_template.format(self.start_frame + index))


class _BadLine(ValueError):
    """What is wrong with a list line, and its `kind`."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


def _parse_line(line, separator, num_classes):
    """Returns (video_dir, start, end, label) or raises _BadLine saying what is wrong."""
    fields = line.strip().split(separator)
    if len(fields) != 4:
        raise _BadLine(faults.MALFORMED, f"expected 4 fields '<video dir> <start> <end> <label>' "
                       f"separated by {separator!r}, got {len(fields)}; set "
                       "config.data.list_separator")
    video_dir, start, end, label = fields
    try:
        start, end, label = int(start), int(end), int(label)
    except ValueError:
        raise _BadLine(faults.MALFORMED, "start frame, end frame and label must be integers") from None
    if end < start:
        raise _BadLine(faults.MALFORMED, f"end frame {end} is before start frame {start}: an empty video")
    if label < 0 or (num_classes and label >= num_classes):
        raise _BadLine(faults.LABEL_OUT_OF_RANGE, f"label {label} is outside [0, {num_classes or 'inf'})")
    return video_dir, start, end, label


def read_video_list(list_path, separator=" ", num_classes=0):
    """Parses a list file into (entries, problems): `VideoEntry`s, and a `faults.Fault` per line
    left out (kind 'malformed list line' or 'label out of range', message 'file:line: what is
    wrong: the line').

    Blank lines are skipped. `num_classes` > 0 makes a label outside [0, num_classes) a problem.
    """
    if not os.path.isfile(list_path):
        raise FileNotFoundError(f"List file {list_path!r} does not exist; set "
                                "config.data.train_list / val_list (relative paths are taken "
                                "under config.data.root).")
    entries, problems = [], []
    with open(list_path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{list_path}:{number}"
            try:
                video_dir, start, end, label = _parse_line(line, separator, num_classes)
            except _BadLine as e:
                problems.append(faults.Fault(e.kind, where, f"{where}: {e}: {line.strip()!r}"))
                continue
            entries.append(VideoEntry(video_dir, start, end - start + 1, label, where))
    return entries, problems


def read_class_names(path):
    """The class names of a file with one name per line (line i = label i)."""
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]
