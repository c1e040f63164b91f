"""Bad input, in one place: the kinds of fault, the frame substitution rule, the stop rule, their
counting, and how tf.data keeps the position of an example that fails to load.

The rules, for every source (frame folders, the stored TFDS format):
- Substitution. A sampled frame that cannot be read (a missing file, a corrupt JPEG, a stored
  frame that does not read or decode) is replaced by the nearest readable frame of the same
  video: for frame i, frame i - 1, then i + 1, i - 2, i + 2, ... (at equal distance the earlier
  frame). Each frame of the video is checked at most once per clip, so the search costs at most
  one check per frame of the video. No randomness: the files alone decide, and a resumed run sees
  the clips of an uninterrupted one. Counted as 'substituted frame' (every substitution), besides
  the fault of the frame itself.
- Skipping. A video none of whose frames can be read (or whose label is out of range, or whose
  frames PIL reads but TensorFlow does not) is skipped: in training the example takes the next
  readable video of its epoch's shuffled order; in evaluation the video is masked out (no host
  counts it; every other video is still counted exactly once).
- Where. A clip is first read as sampled, in the parallel pipeline; only when that fails is it
  read again on the host (`load_in_order` marks it), where frames are checked and substituted
  and other videos tried: a clean dataset pays nothing for the rules.
- Stopping. Training stops when more than `config.data.max_fault_fraction` x FAULT_WINDOW of the
  last FAULT_WINDOW examples had their own video skipped (so never before that many examples);
  an example with substituted frames is not a failure. The error names the fraction, the window
  and examples of each fault. An example gives up, and training stops, when more videos in a row
  of the order fail than that fraction of the window allows (each of them is another example's
  own video) or every video of the split does (`InputStats.give_up`).
- `config.data.strict`: any fault is an immediate error naming it; nothing is substituted or
  skipped. `python -m input_pipeline.check_data` reports every fault of a dataset offline.

Kinds are counted once per distinct fault (a frame file, a video, a list line), except
'substituted frame', counted at each substitution. Messages name the list file and line (or
the source and split), the video, and the frame.
"""
import collections
import dataclasses
import logging
import operator

import numpy as np
from PIL import Image

from input_pipeline.tensorflow_cpu import tf

MALFORMED = "malformed list line"  # A list line that does not parse (frame folders).
LABEL_OUT_OF_RANGE = "label out of range"  # A label outside [0, num_classes).
REPEATED_VIDEO = "repeated video"  # A video listed again (frame folders): one example per video, one label.
EMPTY_VIDEO = "empty video"  # No frame at all: a missing folder, no frame file, no stored frame.
TRUNCATED_VIDEO = "truncated video"  # The listed frames are missing from some point on.
MISSING_FRAME = "missing frame"  # A frame file missing before the last one on disk.
CORRUPT_FRAME = "corrupt frame"  # A frame that does not decode.
UNREADABLE_VIDEO = "unreadable video"  # Skipped, its fault unknown (frames PIL reads, TensorFlow does not).
SUBSTITUTED_FRAME = "substituted frame"  # A frame replaced by its nearest readable neighbour.
# Every kind, in the order reports list them.
KINDS = (MALFORMED, LABEL_OUT_OF_RANGE, REPEATED_VIDEO, EMPTY_VIDEO, TRUNCATED_VIDEO, MISSING_FRAME, CORRUPT_FRAME,
         UNREADABLE_VIDEO, SUBSTITUTED_FRAME)

# What PIL raises for a file that is not a decodable image.
IMAGE_ERRORS = (OSError, SyntaxError, ValueError)
FAULT_WINDOW = 100  # Training examples over which the stop rule takes its fraction.
_EXAMPLES_PER_KIND = 3


def image_problem(file, quick=False):
    """'' when `file` (a path or a file object) is a decodable image, else what is wrong.

    `quick` decodes JPEGs at 1/8 scale (libjpeg's DCT scaling: every byte is still read and
    checked, in a fraction of the time).
    """
    try:
        with Image.open(file) as image:
            if quick:
                image.draft("RGB", (1, 1))
            image.load()
    except IMAGE_ERRORS as e:
        return str(e)
    return ""


def fault_metric(kind):
    """The metric name under which faults of `kind` are logged: 'faults_corrupt_frame', ..."""
    return "faults_" + kind.replace(" ", "_")


@dataclasses.dataclass(frozen=True)
class Fault:
    """One fault: its kind, what makes it distinct within the kind (a frame path, a video), and a
    message naming the list file and line (or source and split), the video and the frame."""
    kind: str
    key: object
    message: str


class DataError(ValueError):
    """Data the run cannot use as configured: a fault in strict mode, the stop rule met, a split
    without a usable video. The message names the faults and what to do; programs print it alone."""


class NoSubstitute(ValueError):
    """No frame of the video is readable, or every sampled frame is: nothing to substitute."""


def nearest_readable(index, length, readable):
    """The readable frame nearest to `index` in [0, length): index, index - 1, index + 1,
    index - 2, ... (ties: the earlier frame); None when no frame is readable."""
    for distance in range(length):
        for frame in (index - distance, index + distance)[:1 if distance == 0 else 2]:
            if 0 <= frame < length and readable(frame):
                return frame
    return None


def substitutes(indices, length, readable):
    """int64 indices to read instead of `indices`: each readable one kept, each other replaced by
    its nearest readable frame (`nearest_readable`). `readable(i)` is called at most once per
    frame. Raises `NoSubstitute` when no frame of the video is readable, or when every sampled
    frame is (the clip failed for another reason: the video is unreadable)."""
    checked = {}

    def check(frame):
        if frame not in checked:
            checked[frame] = readable(frame)
        return checked[frame]

    used = [nearest_readable(int(index), length, check) for index in indices]
    if length == 0 or None in used:
        raise NoSubstitute(f"none of the {length} frames of the video is readable")
    used = np.asarray(used, np.int64)
    if np.array_equal(used, indices):
        raise NoSubstitute("every sampled frame is readable")
    return used


def videos_to_try(num_videos, max_fault_fraction):
    """How many videos of its epoch's order a training example tries: every one, or the fewest
    whose failing in a row (each the own video of another example) exceeds the stop rule."""
    return min(num_videos, int(max_fault_fraction * FAULT_WINDOW) + 1)


def load_in_order(key_groups, load, placeholder, num_parallel_calls):
    """`load(key)` (a dict of tensors) of every key of `key_groups` (a dataset of int64 (n,)
    tensors), in parallel and in order, with 'key' and 'loaded' True; where it raises an error (a
    frame that does not decode), `placeholder(key)`, with 'key' and 'loaded' False.

    `placeholder` should return tensors made outside the pipeline (captured, not allocated per
    key). `num_parallel_calls` -1 = tf.data.AUTOTUNE. TensorFlow cannot catch an op's error inside
    a graph: `ignore_errors` drops the failed element. So each key is followed by a marker that
    cannot fail, its placeholder; a marker is kept only where its key's element was dropped (when
    it follows another marker). Only errors of `load` are caught: `key_groups` must not fail.
    """
    def with_markers(keys):
        return {"key": tf.repeat(keys, 2), "marker": tf.tile([False, True], tf.shape(keys))}

    def load_row(element):
        key = element["key"]
        return tf.cond(element["marker"], lambda: {**placeholder(key), "key": key, "loaded": False},
                       lambda: {**load(key), "key": key, "loaded": True})

    def mark_kept(after_marker, element):
        return tf.logical_not(element["loaded"]), {"kept": tf.logical_or(element["loaded"], after_marker),
                                                   "element": element}

    rows = key_groups.map(with_markers).unbatch()
    loaded = rows.map(load_row, num_parallel_calls=num_parallel_calls, deterministic=True).ignore_errors()
    marked = loaded.scan(tf.constant(True), mark_kept)
    return marked.filter(operator.itemgetter("kept")).map(operator.itemgetter("element"))


@dataclasses.dataclass
class InputStats:
    """Faults of one split's input met so far, counted by `add_example` as batches are handed over.

    `unreadable`: videos skipped (a video met twice counts twice); `substituted_clips`: examples
    read with at least one substituted frame. `kinds`: distinct faults per
    kind (`KINDS`), 'substituted frame' counting every substitution; `kind_examples`: the first few
    messages of each kind. `max_fault_fraction` None: no stop rule (evaluation).
    """
    split: str = "train"
    strict: bool = False
    max_fault_fraction: float | None = None
    unreadable: int = 0
    substituted_clips: int = 0
    kinds: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    kind_examples: dict = dataclasses.field(default_factory=dict)
    _seen: set = dataclasses.field(default_factory=set, repr=False)
    _reported: dict = dataclasses.field(default_factory=dict, repr=False)
    _recent: collections.deque = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=FAULT_WINDOW), repr=False)
    _failed_recently: int = dataclasses.field(default=0, repr=False)

    def add_list_problems(self, problems):
        """Counts the `Fault`s of the list lines left out of the split's list."""
        for problem in problems:
            self._count(problem)

    def add_example(self, videos, skipped=(), video=None, sampled=(), used=()):
        """Counts the faults of one example: the videos of `skipped` could not be read, `video`
        (None: no video could) was read at frames `used` instead of `sampled`. `videos` names
        them for its source: `name(ref)`, `frame_name(ref, index)`, `skip_faults(ref)` and
        `frame_faults(ref, index)` (lists of `Fault`). A clean example: `add_example(videos)`.
        Raises in strict mode, or when training's stop rule is met."""
        for ref in skipped:
            self._skip(videos.name(ref), videos.skip_faults(ref))
        if video is not None and np.any(sampled != used):
            self.substituted_clips += 1
            for index, read in zip(sampled, used):
                if index != read:
                    self._substitute(videos, video, int(index), int(read))
        if self.max_fault_fraction is not None:
            if len(self._recent) == FAULT_WINDOW:
                self._failed_recently -= self._recent[0]
            self._recent.append(bool(len(skipped)))
            self._failed_recently += self._recent[-1]
            self._check_fraction()

    def _fail_if_strict(self, message):
        if self.strict:
            raise DataError(message + "\n(config.data.strict is on: fix the data, or turn it off to "
                             "substitute unreadable frames, skip unreadable videos and count them.)")

    def _count(self, fault):
        if fault.kind != SUBSTITUTED_FRAME:
            if (fault.kind, fault.key) in self._seen:
                return
            self._seen.add((fault.kind, fault.key))
        self.kinds[fault.kind] += 1
        examples = self.kind_examples.setdefault(fault.kind, [])
        if len(examples) < _EXAMPLES_PER_KIND and fault.message not in examples:
            examples.append(fault.message)
            logging.warning("%s input, %s: %s", self.split, fault.kind, fault.message)

    def _skip(self, name, faults):
        message = "; ".join(fault.message for fault in faults) or f"{name}: unreadable"
        self._fail_if_strict(message)
        self.unreadable += 1
        for fault in faults:
            self._count(fault)
        logging.warning("Skipped an unreadable video (%d so far): %s", self.unreadable, message)

    def _substitute(self, videos, video, index, read):
        faults = videos.frame_faults(video, index)
        what = ", ".join(sorted({fault.kind for fault in faults})) or "unreadable"
        message = (f"{videos.name(video)}: {videos.frame_name(video, index)} ({what}) replaced by "
                   f"{videos.frame_name(video, read)}")
        self._fail_if_strict(message)
        for fault in faults:
            self._count(fault)
        self._count(Fault(SUBSTITUTED_FRAME, None, message))

    def _check_fraction(self):
        failed = self._failed_recently
        if failed > self.max_fault_fraction * FAULT_WINDOW:
            raise DataError(
                f"{failed} of the last {len(self._recent)} {self.split} examples had an unreadable "
                f"video: more than config.data.max_fault_fraction={self.max_fault_fraction} of a "
                f"window of {FAULT_WINDOW} examples. The dataset looks broken; run python -m "
                "input_pipeline.check_data. Faults so far:\n" + "\n".join(self.lines()))

    def give_up(self, tried, num_videos):
        """Raises the error of a training example none of whose `tried` videos, next to each other in
        the shuffled order of the split's `num_videos`, could be read."""
        what = (f"none of the {num_videos} videos of the {self.split} split" if tried == num_videos else
                f"none of {tried} videos in a row of the shuffled {self.split} split (so more than "
                f"config.data.max_fault_fraction={self.max_fault_fraction} of a window of {FAULT_WINDOW} examples "
                "would fail)")
        raise DataError(f"No video for a {self.split} example: {what} could be read. The dataset looks broken; run "
                        "python -m input_pipeline.check_data. Faults so far:\n" + "\n".join(self.lines()))

    def scalars(self):
        """{'unreadable_videos': n, 'substituted_clips': n, 'faults_<kind>': count} with the
        kinds met, for the metrics."""
        return {"unreadable_videos": self.unreadable, "substituted_clips": self.substituted_clips, **{
            fault_metric(kind): self.kinds[kind] for kind in KINDS if self.kinds[kind]}}

    def lines(self):
        """'N x kind, e.g. message | message' for each kind met."""
        return [f"{self.kinds[kind]} x {kind}, e.g. " + " | ".join(self.kind_examples[kind])
                for kind in KINDS if self.kinds[kind]]

    def report(self):
        """Logs the fault counts per kind, with a few examples, if they changed since the last
        report; returns `scalars()`."""
        if self.kinds != self._reported:
            self._reported = collections.Counter(self.kinds)
            logging.warning("Faults in the %s input so far (%d unreadable-video reads):\n%s",
                            self.split, self.unreadable, "\n".join(self.lines()))
        return self.scalars()
