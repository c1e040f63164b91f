"""Video files decoded with PyAV (no ffmpeg binary) into JPEG frames."""
import io

import av
from PIL import Image

# What decoding an unreadable or unsupported file raises.
DECODE_ERRORS = (av.error.FFmpegError, ValueError, OSError)


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
