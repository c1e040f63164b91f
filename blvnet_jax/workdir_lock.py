"""One training run per workdir: an advisory lock file, `{workdir}/training.lock`.

The file holds the holder's host, PID, start time and a heartbeat that the holder rewrites every
`HEARTBEAT_S` seconds. A second training refuses to start while the lock is held
(`WorkdirBusyError`, one line naming the holder). A stale lock, whose process is gone, is taken
over with a log line: on the same host when its PID is no longer alive; on any host when its
heartbeat is older than `STALE_AFTER_S` (a killed run on another machine, or a reused PID). The
lock is released when training returns, raises or is preempted. In a multi-host run process 0
takes it for all; the others follow its answer.

Limits: the lock is advisory (only training takes it; evaluation and prediction read checkpoints
without it). On local and NFS disks the file is created atomically (O_EXCL). On object stores
(`gs://`, `s3://`) it is a check then a write: two runs started within the same second can both
pass; the later heartbeat then logs that the lock is no longer ours. Heartbeats on another host are
compared with this host's clock, so hosts must agree on the time within minutes. A holder suspended
for longer than `STALE_AFTER_S` (SIGSTOP) loses its lock.
"""
import datetime
import json
import logging
import os
import secrets
import socket
import threading
import time

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

LOCK_NAME = "training.lock"
HEARTBEAT_S = 60.0
STALE_AFTER_S = 600.0


class WorkdirBusyError(RuntimeError):
    """Another training holds the workdir's lock."""


def describe(holder: dict | None) -> str:
    """'PID 123 on host-a, running since 2025-01-01 12:00:00 UTC'."""
    if not holder:
        return "a run whose lock file cannot be read"
    return f"PID {holder.get('pid')} on {holder.get('host')}, running since {holder.get('since')}"


def stale_reason(holder: dict | None, modified: float | None) -> str | None:
    """Why the lock of `holder` (its file's contents) no longer protects a run; None: it does."""
    now = time.time()
    if holder is None:  # a holder killed between creating and writing the file
        return None if modified is None or now - modified < STALE_AFTER_S else "its file is empty or unreadable"
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            return f"process {holder['pid']} no longer runs on this host"
        except PermissionError:
            pass  # alive, owned by another user
    if now - float(holder.get("heartbeat", 0)) > STALE_AFTER_S:
        return f"its heartbeat is {now - float(holder.get('heartbeat', 0)):.0f} s old (over {STALE_AFTER_S:.0f} s)"
    return None


class WorkdirLock:
    """Context manager holding `{workdir}/training.lock` for the duration of a training run."""

    def __init__(self, workdir: epath.Path):
        self.path = workdir / LOCK_NAME
        self.token = secrets.token_hex(8)
        self.record = {"host": socket.gethostname(), "pid": os.getpid(),
                       "since": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                       "token": self.token}
        self.held = False
        self.stop = threading.Event()
        self.heartbeat = None

    def __enter__(self):
        error = None
        if jax.process_index() == 0:
            try:
                self.acquire()
            except WorkdirBusyError as busy:
                error = busy
        if jax.process_count() > 1:
            taken = bool(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
            if not taken and error is None:
                holder, _ = self.read()
                error = WorkdirBusyError(f"the workdir {self.path.parent} is in use by another training: "
                                         f"{describe(holder)} (lock file {self.path}; process 0 refused)")
        if error is not None:
            raise error
        return self

    def __exit__(self, *exc_info):
        self.release()
        return False

    def read(self) -> tuple[dict | None, float | None]:
        """The lock file's contents (None: absent or unreadable) and its modification time."""
        try:
            modified = self.path.stat().mtime
            text = self.path.read_text()
        except (FileNotFoundError, OSError):
            return None, None
        try:
            return json.loads(text), modified
        except ValueError:
            return None, modified

    def create(self) -> bool:
        """Writes our lock file unless one exists; atomic on local disks."""
        text = json.dumps(dict(self.record, heartbeat=time.time()))
        if "://" in str(self.path):
            if self.path.exists():
                return False
            self.path.write_text(text)
            return True
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        return True

    def acquire(self) -> None:
        for _ in range(3):  # a stale lock is taken over; another run may win the race for the new one
            if self.create():
                self.held = True
                self.heartbeat = threading.Thread(target=self.beat, name="workdir-lock-heartbeat", daemon=True)
                self.heartbeat.start()
                return
            holder, modified = self.read()
            if holder is None and modified is None:
                continue  # released between our create and read
            reason = stale_reason(holder, modified)
            if reason is None:
                raise WorkdirBusyError(f"the workdir {self.path.parent} is in use by another training: "
                                       f"{describe(holder)} (lock file {self.path}); wait for it to end, "
                                       "stop it, or train in another workdir")
            logging.warning("Taking over the stale lock %s of %s: %s", self.path, describe(holder), reason)
            self.path.unlink(missing_ok=True)
        raise WorkdirBusyError(f"the workdir {self.path.parent}: another run keeps taking the lock {self.path}")

    def beat(self) -> None:
        """Rewrites the heartbeat every `HEARTBEAT_S` seconds while the lock is ours."""
        while not self.stop.wait(HEARTBEAT_S):
            holder, _ = self.read()
            if not holder or holder.get("token") != self.token:
                logging.error("The lock %s is no longer ours (now: %s): two runs may share this workdir",
                              self.path, describe(holder))
                return
            text = json.dumps(dict(self.record, heartbeat=time.time()))
            try:
                if "://" in str(self.path):
                    self.path.write_text(text)
                else:
                    temporary = self.path.with_name(f"{LOCK_NAME}.{self.token}")
                    temporary.write_text(text)
                    os.replace(temporary, self.path)
            except OSError as error:  # a full disk must not kill the run; the next beat retries
                logging.warning("Could not refresh the lock %s: %s", self.path, error)

    def release(self) -> None:
        """Stops the heartbeat and removes the lock file if it is still ours."""
        if not self.held:
            return
        self.held = False
        self.stop.set()
        if self.heartbeat is not None:
            self.heartbeat.join()
        holder, _ = self.read()
        if holder and holder.get("token") == self.token:
            self.path.unlink(missing_ok=True)
