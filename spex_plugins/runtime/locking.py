"""An advisory, cross-process exclusive lock on a sidecar file (POSIX flock, Windows msvcrt)."""

from __future__ import annotations

import errno
import os
import warnings
from contextlib import contextmanager

try:  # POSIX advisory locks
    import fcntl
except ImportError:  # Windows
    fcntl = None
try:
    import msvcrt
except ImportError:  # POSIX
    msvcrt = None

__all__ = ["exclusive_lock"]

O_BINARY = getattr(os, "O_BINARY", 0)
"""Binary-mode flag for ``os.open`` (Windows; 0 elsewhere)."""
READ_ONLY_ERRORS = (errno.EACCES, errno.EPERM, errno.EROFS)
"""errno values of a file that may only be opened for reading."""
_BUSY_ERRORS = {getattr(errno, name) for name in ("EDEADLOCK", "EDEADLK", "EACCES")
                if hasattr(errno, name)}
_NO_LOCK_ERRORS = {getattr(errno, name) for name in ("ENOLCK", "EOPNOTSUPP", "ENOTSUP", "ENOSYS")
                   if hasattr(errno, name)}




@contextmanager
def exclusive_lock(path: str):
    """Hold an exclusive advisory lock on the file ``path`` (created if missing) while inside.

    POSIX: ``fcntl.flock``, which blocks until other holders (in any process, or through
    another open of the file in this one) let go; the kernel drops it when its holder dies, so
    a crash never leaves a stale lock behind. Windows: ``msvcrt.locking`` on the file's first
    byte, retried until it is had. Without either module, or where the file system refuses
    locks (``ENOLCK`` on some network mounts) or the lock file cannot be created (a read-only
    folder), it runs unlocked (with a warning for refused locks).
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | O_BINARY, 0o666)
    except OSError as error:
        if error.errno not in READ_ONLY_ERRORS:
            raise
        try:
            fd = os.open(path, os.O_RDONLY | O_BINARY)
        except OSError:
            fd = None  # a read-only folder without a lock file: nobody can write here anyway
    if fd is None:
        yield
        return
    locked = False
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                locked = True
            except OSError as error:
                if error.errno not in _NO_LOCK_ERRORS:
                    raise
                warnings.warn(f"cannot lock {path} ({error.strerror}); concurrent writers to "
                              "this cache are not serialised", RuntimeWarning, stacklevel=3)
        elif msvcrt is not None:
            while not locked:
                try:  # LK_LOCK gives up after 10 one-second tries: keep trying
                    os.lseek(fd, 0, os.SEEK_SET)
                    msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                    locked = True
                except OSError as error:  # EDEADLOCK: still held by another process
                    if error.errno not in _BUSY_ERRORS:
                        raise
        yield
    finally:
        if locked and fcntl is None and msvcrt is not None:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        os.close(fd)  # closing the descriptor also releases a flock


