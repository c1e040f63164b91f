"""Video files decoded with PyAV (no ffmpeg binary) into JPEG frames, and written from frames."""
import io

import av
from PIL import Image

# What decoding an unreadable or unsupported file raises.
DECODE_ERRORS = (av.error.FFmpegError, ValueError, OSError)


def write_video(path, frames, codec="mpeg4", fps=12):
    """Writes uint8 `(n, height, width, 3)` frames as a video file with PyAV (codec e.g. 'mpeg4',
    'libx264', 'libvpx' for webm); the synthetic data and the tests make real video files with it."""
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def decode_video(path, short_side, quality):
    """JPEG bytes of every frame of a video file, shorter side resized to `short_side`."""
    jpegs = []
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        for frame in container.decode(video=0):
            image = frame.to_image()
            scale = short_side / min(image.size)
            image = image.resize((round(image.width * scale), round(image.height * scale)),
                                 Image.BILINEAR)
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=quality)
            jpegs.append(buffer.getvalue())
    if not jpegs:
        raise ValueError("no frame decoded")
    return jpegs
