"""Files, read and written safely: bounded reads of regular files, atomic replacement.

Everything dsl reads on a spec's, a data source's or a run directory's say-so
is read with :func:`read_bounded`: only a regular file (checked on the open
descriptor, so a FIFO or a device is refused at once instead of blocking or
reading forever), and at most a given number of bytes. Everything it writes
goes through :func:`atomic_write`: a temporary file in the same folder,
flushed and fsynced, then ``os.replace``, then the folder fsynced, so a crash
leaves the old file or the new one, never a torn mix.
"""

from __future__ import annotations

import functools
import os
import stat
import tempfile
from collections.abc import Callable
from typing import Any


def read_bounded(path: str, limit: int, what: str = "file") -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes; OSError otherwise."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{what} `{path}` is not a regular file")
        if st.st_size > limit:
            raise OSError(f"{what} `{path}` is {st.st_size:,} bytes; the limit is {limit:,}")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = _read_upto(fh, st.st_size, limit)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OSError(f"{what} `{path}` is over {limit:,} bytes; the limit is {limit:,}")
    return data


def _read_upto(fh: Any, size: int, limit: int) -> bytes:
    """At most ``limit + 1`` bytes; a buffer the file's size, not the limit's (``read(n)`` allocates n)."""
    chunks = [fh.read(min(size, limit) + 1)]
    total = len(chunks[0])
    while chunks[-1] and total <= limit:  # the file grew after fstat
        chunks.append(fh.read(min(2**20, limit + 1 - total)))
        total += len(chunks[-1])
    return b"".join(chunks)


@functools.cache
def new_file_mode() -> int:
    """What ``open()`` would give a new file (mkstemp's 0600 would hide it from the group).

    Read once: setting the umask to read it is not thread-safe."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def fsync_path(path: str) -> None:
    """Flush a file's (or a folder's) data to disk; a no-op where the OS refuses."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, fsync it, move it onto ``path`` and fsync the folder.

    An existing file keeps its mode; a symbolic link keeps pointing at the file,
    which is what gets replaced."""
    path = os.path.realpath(path)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = new_file_mode()
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, mode)
        write(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_path(folder)


def atomic_text(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8, ``\\n`` line ends) in one step."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)

    atomic_write(path, write)
