"""Opening a file a user names as input: a regular file, or a refusal that says what it is.

Only a regular file is something backprop reads: a FIFO would block `open` until a writer
comes (forever, for most), a device such as /dev/zero never ends, a folder holds no bytes.
`open_regular` opens without waiting for a writer (O_NONBLOCK, which changes nothing for a
regular file) and checks what it opened, so nothing can be swapped in between the check and
the read.
"""

from __future__ import annotations

import os
import stat

# What a path can be besides a regular file, in words (stat's S_IS* tests).
_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def open_regular(path, what: str, limit: int | None = None):
    """`path` opened for reading bytes, if it is a regular file of at most `limit` bytes (any
    size when None). Otherwise, naming `what` (how the caller's user wrote the file):
    FileNotFoundError when nothing is there, IsADirectoryError for a folder, ValueError for
    anything else (a FIFO, a device, a socket, a file over `limit`). Other OSErrors (no
    permission) come as the system words them."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"{what}: no such file") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(f"{what} is a folder, not a file")
        if not stat.S_ISREG(info.st_mode):
            kind = next((words for test, words in _KINDS if test(info.st_mode)), "not a file")
            raise ValueError(f"{what} is {kind}, not a regular file")
        if limit is not None and info.st_size > limit:
            raise ValueError(f"{what} is {info.st_size:,} bytes; at most {limit:,} are read")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
