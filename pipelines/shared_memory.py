"""Small tables the python stubs of one server share: a numpy record in a shared-memory file, and a lock.

Each model instance is a stub process of its own (a child of tritonserver), so what a tier's instances
must agree on (the images it admitted: pipelines.admission; the cameras it let in: pipelines.cameras)
lives in a file under /dev/shm named after the server process, updated under a lock file.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

PREFIX = "triton-people"


def _directory() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def _server_key(pid: int) -> str:
    """The server process's pid and start time (its /proc stat field 22): a pid reused later gets another key."""
    try:
        started = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        started = "0"
    return f"{pid}-{started}"


def path_for(name: str, server_pid: int | None = None) -> Path:
    """The table `name` of the server that runs this stub (its parent), or of `server_pid`'s."""
    return _directory() / f"{PREFIX}-{_server_key(server_pid or os.getppid())}-{name}"


def remove_stale() -> None:
    """Tables of servers that no longer run (a crashed server leaves its files behind)."""
    for path in _directory().glob(f"{PREFIX}-*"):
        pid = path.name.removeprefix(f"{PREFIX}-").split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            path.unlink(missing_ok=True)


class Table:
    """One record of `dtype` in the file at `path`, zero-filled when the file is new; `locked()` around updates."""

    def __init__(self, path: Path, dtype: np.dtype):
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self._lock = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            with self.locked():
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    if os.fstat(fd).st_size < dtype.itemsize:
                        os.ftruncate(fd, dtype.itemsize)
                    self._map = mmap.mmap(fd, dtype.itemsize)
                finally:
                    os.close(fd)
        except BaseException:
            os.close(self._lock)
            raise
        self.record = np.ndarray((), dtype, self._map, 0)

    @contextmanager
    def locked(self) -> Iterator[None]:
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_UN)

    def close(self) -> None:
        del self.record
        self._map.close()
        os.close(self._lock)

    def remove(self) -> None:
        """Delete the files (the server is stopping); instances that still hold them keep working."""
        self.path.unlink(missing_ok=True)
        self.lock_path.unlink(missing_ok=True)
