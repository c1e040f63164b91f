"""Video files decoded with PyAV (no ffmpeg binary) into JPEG frames, and written from frames; what
counts as a video in a folder of them; the text files (lists, annotations, class names) that name
them, and the rule of one line per video in them."""
import collections
import io
import logging
import math
import os

import av
import numpy as np
from PIL import Image

# What decoding an unreadable or unsupported file raises.
DECODE_ERRORS = (av.error.FFmpegError, ValueError, OSError)
# The names of the files read as videos where a folder may hold other files too.
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".flv", ".wmv",
                    ".3gp", ".ogv", ".ts")
# The names of the image files of a frame folder: a folder holding one is a video of its frames.
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")


class TextError(ValueError):
    """A text file that is not UTF-8; the message names the file and the line."""


def text_lines(path):
    """The lines of a UTF-8 text file, with or without a byte-order mark (as Windows editors save
    them), its line ends read as Python's text files read them; a `TextError` for one that is not."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return list(io.StringIO(data.decode("utf-8-sig"), newline=None))
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise TextError(f"{path}:{line} is not UTF-8 text ({error.reason}: byte {data[error.start]:#04x}); save the "
                        "file as UTF-8") from None


def one_line_per_video(lines):
    """(indices kept, {video: indices} of each video on more than one line) of `lines`, the (video,
    label) pairs of a list or annotation file: a video is kept at its first line when all its lines
    give it the same label, and left out when they differ (a video has one label)."""
    if len({video for video, _ in lines}) == len(lines):
        return list(range(len(lines))), {}
    lines_of = collections.defaultdict(list)
    for index, (video, _) in enumerate(lines):
        lines_of[video].append(index)
    kept = [indices[0] for indices in lines_of.values() if len({lines[i][1] for i in indices}) == 1]
    return kept, {video: indices for video, indices in lines_of.items() if len(indices) > 1}


def visible(folder):
    """The sorted names in `folder` but hidden ones ('.DS_Store', '.ipynb_checkpoints', macOS's '._a.mp4')."""
    return sorted(name for name in os.listdir(folder) if not name.startswith("."))


def frame_files(folder):
    """The paths of the image files (`FRAME_EXTENSIONS`) of a frame folder, sorted by name; [] for
    a folder that is no frame folder."""
    return [os.path.join(folder, name) for name in visible(folder)
            if name.lower().endswith(FRAME_EXTENSIONS) and os.path.isfile(os.path.join(folder, name))]


def find_videos(folder):
    """(videos, others): the paths of the video files (by extension: `VIDEO_EXTENSIONS`) and frame
    folders (`frame_files`) under `folder`, at any depth, sorted; `others`, the paths of the files
    that are neither. Hidden files and folders are skipped, and so are the sub-folders of a frame
    folder."""
    videos, others = [], []
    for name in visible(folder):
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            if frame_files(path):
                videos.append(path)
            else:
                found, other = find_videos(path)
                videos += found
                others += other
        elif name.lower().endswith(VIDEO_EXTENSIONS):
            videos.append(path)
        else:
            others.append(path)
    return videos, others


def open_video(path):
    """PyAV's container of the video file at `path`; an empty file raises ValueError saying so (PyAV
    says only 'Invalid data found when processing input')."""
    if os.path.getsize(path) == 0:
        raise ValueError("empty file (0 bytes)")
    return av.open(path)


def write_video(path, frames, codec="mpeg4", fps=12, rotation=0):
    """Writes uint8 `(n, height, width, 3)` frames as a video file with PyAV (codec e.g. 'mpeg4',
    'libx264', 'libvpx' for webm); the synthetic data and the tests make real video files with it.
    `rotation`: the display matrix's, in degrees counterclockwise (a phone's portrait video: 90 or -90)."""
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def upright_rgb(frame):
    """uint8 (height, width, 3) RGB of a decoded `av.VideoFrame` the way up it is meant to be seen:
    turned by the rotation of its display matrix (phones store portrait videos as landscape frames
    and that rotation), as ffmpeg does by default. A rotation that is not a multiple of 90 degrees
    is ignored, as ffmpeg ignores it."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = round(frame.rotation / 90)
    if not turns % 4 or abs(frame.rotation - 90 * turns) > 1:
        return rgb
    return np.ascontiguousarray(np.rot90(rgb, turns))  # Both counterclockwise.


def decoded_frames(container, stream, corrupt):
    """The frames of `stream` as ffmpeg decodes them: a packet that does not decode (a damaged part
    of the file) is skipped with its frames, and its error appended to the list `corrupt`."""
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.error.InvalidDataError as error:
            corrupt.append(str(error))


def damage_report(corrupt):
    """'2 damaged packets skipped (<the first error>)' for the errors `decoded_frames` collected; '' for none."""
    if not corrupt:
        return ""
    return f"{len(corrupt)} damaged packet{'s' * (len(corrupt) > 1)} skipped ({corrupt[0]})"


def jpeg_bytes(image, quality):
    """The bytes of a PIL RGB image saved as a JPEG of `quality`."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode_video(path, short_side, quality, max_fps=0):
    """JPEG bytes of the frames of a video file, upright (`upright_rgb`), shorter side resized to
    `short_side` (a frame of another resolution than the first: to the first's size).

    Every frame by default (as the official frame extraction); `max_fps` > 0 keeps at most that
    many a second: the first frame at or after each 1 / max_fps step from the first frame. The
    frames of damaged packets are lost, as with ffmpeg, and logged (`decoded_frames`).
    """
    jpegs, corrupt = [], []
    start, next_step, size = None, 0, None
    with open_video(path) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        # Timestamps are rounded to the stream's time base (1 ms in webm): a step that late is
        # still on time.
        tolerance = max_fps * float(stream.time_base or 0) + 1e-6
        for index, frame in enumerate(decoded_frames(container, stream, corrupt)):
            if max_fps:
                time = frame.time if frame.time is not None else index / float(stream.average_rate)
                start = time if start is None else start
                step = (time - start) * max_fps
                if step < next_step - tolerance:
                    continue
                next_step = math.floor(step + tolerance) + 1
            image = Image.fromarray(upright_rgb(frame))
            if size is None:  # Every frame takes the first's size, should the stream change resolution.
                scale = short_side / min(image.size)
                size = round(image.width * scale), round(image.height * scale)
            image = image.resize(size, Image.BILINEAR)
            jpegs.append(jpeg_bytes(image, quality))
    damage = damage_report(corrupt)
    if not jpegs:
        raise ValueError("no frame decoded" + (f": {damage}" if damage else ""))
    if corrupt:
        logging.warning("%s: %s; %d frames decoded.", path, damage, len(jpegs))
    return jpegs
