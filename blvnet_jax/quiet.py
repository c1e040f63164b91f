"""One way every program of ours keeps its log to what a user needs: the INFO chatter of Orbax,
TensorFlow and etils dropped, their warnings and errors kept, our own INFO lines kept.

Light on purpose (the standard library and absl only): `main.py` installs it before importing jax.
"""
import logging

from absl import logging as absl_logging

LIBRARIES = ("/orbax/", "/tensorflow/", "/etils/")
# Orbax warnings that are no news: a save without evaluation metrics (only evaluated saves compete
# for the best), and the options it adjusts when we open checkpoints read-only.
ORBAX_NOISE = ("did not provide metrics", "read_only=True", "is read only")


class QuietLibraries(logging.Filter):
    """Drops the libraries' INFO records and Orbax's `ORBAX_NOISE` warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "/orbax/" in record.pathname and any(text in record.getMessage() for text in ORBAX_NOISE):
            return False
        return record.levelno >= logging.WARNING or not any(part in record.pathname for part in LIBRARIES)


def quiet_libraries() -> None:
    """Installs `QuietLibraries` on absl's handler; call first thing in a program's `main`."""
    absl_logging.get_absl_handler().addFilter(QuietLibraries())
