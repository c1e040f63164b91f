"""What the processes of a multi-host run must agree on, and how they find out.

- The workdir: a local path or a URL (`gs://bucket/run`), one directory that every host reads and
  writes (Orbax writes each host's shards there and every host lists it on resume).
  `check_shared_workdir` proves it at start-up: process 0 writes a token, every process reads it.
- The step to resume from: process 0 decides (`agreed_step`), the others follow.
- The step to stop at on preemption (`PreemptionWatch`).
- Whether to stop on an error that only some processes met (`raise_together`), such as bad data.
In a single process each of these is trivially true and costs nothing.
"""
import contextlib
import logging
import os
import secrets
import signal
import socket
import threading

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

HOST_NAME_BYTES = 64
ERROR_BYTES = 8192  # of the message `raise_together` shares


class NotSharedError(RuntimeError):
    """The processes of one run do not see the same workdir or checkpoints."""


def workdir_path(workdir: str) -> epath.Path:
    """`workdir` as a path every library here can use: URLs as they are, local paths absolute."""
    return epath.Path(workdir if "://" in workdir else os.path.abspath(workdir))


def gather_texts(text: str, size: int) -> list[str]:
    """The `text` of every process (each cut to `size` bytes of UTF-8), in process order, on every process."""
    row = np.zeros(size, np.uint8)
    encoded = text.encode()[:size]
    row[:len(encoded)] = np.frombuffer(encoded, np.uint8)
    rows = np.asarray(multihost_utils.process_allgather(row)).reshape(-1, size)
    return [bytes(row).rstrip(b"\0").decode(errors="ignore") for row in rows]


def process_names() -> list[str]:
    """`['process 0 on host-a', 'process 1 on host-b', ...]`, the same list on every process."""
    return [f"process {i} on {host}" for i, host in enumerate(gather_texts(socket.gethostname(), HOST_NAME_BYTES))]


def failing_processes(ok: bool) -> list[str]:
    """Names of the processes whose `ok` is False (every process gets the same answer)."""
    flags = np.asarray(multihost_utils.process_allgather(np.int32(ok))).reshape(-1)
    failed = np.flatnonzero(flags == 0)
    if not len(failed):  # the usual case: no second collective for the names
        return []
    names = process_names()
    return [names[i] for i in failed]


def raise_together(error: BaseException | None, error_type: type[BaseException]) -> None:
    """Raises on every process when any process has an `error` (None: none): that process its own
    error, the others an `error_type` with the first failing process's message after its name.
    Every process calls it at the same point of the run: one process raising alone would leave the
    others waiting in their next collective."""
    if jax.process_count() > 1:
        failed = failing_processes(error is None)
        if failed:
            messages = [text for text in gather_texts("" if error is None else str(error), ERROR_BYTES) if text]
            if error is None:
                raise error_type(f"{failed[0]}: {messages[0]}")
    if error is not None:
        raise error


@contextlib.contextmanager
def together(error_type: type[BaseException]):
    """Runs the block on every process; an `error_type` raised in it on any process is raised on all
    of them as it leaves the block (`raise_together`), e.g. a data file missing on one host only."""
    error = None
    try:
        yield
    except error_type as raised:
        error = raised
    raise_together(error, error_type)


def check_shared_workdir(workdir: epath.Path) -> None:
    """Raises `NotSharedError` on every process unless all of them see the file process 0 wrote
    into `workdir` (a per-host local disk fails here, before any training)."""
    if jax.process_count() == 1:
        return
    token = int(multihost_utils.broadcast_one_to_all(np.int64(secrets.randbits(62))))
    marker = workdir / ".shared_by_all_hosts"
    if jax.process_index() == 0:
        marker.write_text(str(token))
    multihost_utils.sync_global_devices("blvnet_jax: workdir token written")
    try:
        seen = marker.read_text() == str(token)
    except (FileNotFoundError, OSError):
        seen = False
    missing = failing_processes(seen)
    multihost_utils.sync_global_devices("blvnet_jax: workdir token read")
    if jax.process_index() == 0:
        marker.unlink(missing_ok=True)
    if missing:
        raise NotSharedError(
            f"the workdir {workdir} is not shared by all hosts: {', '.join(missing)} cannot see the file "
            f"process 0 wrote there. Use one directory every host reads and writes (e.g. gs://bucket/run).")


def agreed_step(local_step: int | None, local_steps: list[int], where: str) -> int | None:
    """Process 0's `local_step` (None: no checkpoint), checked against every process's `local_steps`.

    Raises `NotSharedError`, naming the processes that do not have the step, when they differ.
    """
    if jax.process_count() == 1:
        return local_step
    step = int(multihost_utils.broadcast_one_to_all(np.int64(-1 if local_step is None else local_step)))
    step = None if step < 0 else step
    missing = failing_processes(step is None or step in local_steps)
    if missing:
        raise NotSharedError(f"process 0 resumes from checkpoint {step} in {where} but {', '.join(missing)} "
                             "cannot see it: the workdir must be one directory shared by all hosts")
    return step


class PreemptionWatch:
    """Tells the training loop at which step to save and stop when the run is preempted.

    One process: SIGTERM, or a first Ctrl-C (SIGINT; a second one stops at once), sets a flag
    (the handlers are this object's until `close`, or the end of its `with` block; a loop run
    outside the main thread, where Python cannot take signals, is not watched). Several
    processes (`jax.distributed`): JAX's preemption service, which receives SIGTERM (or the
    platform's notice) on any host and agrees with all of them on the next common step;
    `reached(step)` must then be called at every step by every process.
    """

    def __init__(self):
        self.distributed = jax.process_count() > 1
        self.noticed = False
        watch_signals = not self.distributed and threading.current_thread() is threading.main_thread()
        self.previous_handlers = {signum: signal.signal(signum, self._notice)
                                  for signum in (signal.SIGTERM, signal.SIGINT) if watch_signals}

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        self.close()

    def _notice(self, signum, frame):
        del frame
        self.noticed = True
        if signum == signal.SIGINT:
            signal.signal(signum, self.previous_handlers[signum])
            logging.warning("Ctrl-C: stopping after this step with its checkpoint (Ctrl-C again: at once, losing the "
                            "steps since the last checkpoint)")

    def reached(self, step: int) -> bool:
        """True at the step where every process should save a checkpoint and stop."""
        if self.distributed:
            return multihost_utils.reached_preemption_sync_point(step)
        return self.noticed

    def close(self) -> None:
        for signum, handler in self.previous_handlers.items():
            signal.signal(signum, handler)
        self.previous_handlers = {}
