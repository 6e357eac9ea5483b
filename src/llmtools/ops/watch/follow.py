"""Read a growing file like `tail -F`: keep reading, survive rotation and truncation.

- Rotation by rename (logrotate's default, `mv log log.1` then a new `log`): the old file is
  read on until a new file appears under the name (inode changed); then the rest of the old file
  is drained and the new file is read from its start.
- Truncation in place (`copytruncate`, `: > log`): when the file shrinks below the read position,
  reading restarts at its start.
- A missing file is waited for.
- A final line without a newline is held back until its newline arrives (a writer may be
  mid-line), and is only given out when the file is rotated away.
"""

from __future__ import annotations

import os
import time
from typing import BinaryIO, Callable, Iterator

IDLE = None  # yielded when there is nothing new, so the caller can do time-based work


def follow(
    path: str,
    poll: float = 0.25,
    from_end: bool = False,
    stop: Callable[[], bool] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    chunk: int = 1 << 16,
) -> Iterator[bytes | None]:
    """Yield complete lines (without the newline) from `path` forever, or IDLE after a quiet poll.

    Stops when `stop()` turns true. Blank lines are given out too; the caller skips them.
    """
    fh: BinaryIO | None = None
    ino = None
    pending = b""
    first_open = True
    try:
        while not (stop and stop()):
            if fh is None:
                fh, ino = _open(path)
                if fh is None:
                    yield IDLE
                    sleep(poll)
                    continue
                if from_end and first_open:
                    fh.seek(0, os.SEEK_END)
                first_open = False
                pending = b""
            data = fh.read(chunk)
            if data:
                lines = (pending + data).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    yield line.rstrip(b"\r")
                continue
            # At the end of what is there: rotated, truncated, or just quiet?
            try:
                st = os.stat(path)
            except FileNotFoundError:
                st = None
            if st is None:
                # Renamed away and no new file yet: the writer may still be finishing the old one.
                yield IDLE
                sleep(poll)
                continue
            if st.st_ino != ino:
                # A new file took the name: drain what reached the old one, then switch.
                rest = fh.read()
                fh.close()
                fh = None
                tail = pending + rest
                pending = b""
                for line in tail.split(b"\n"):
                    if line.strip():
                        yield line.rstrip(b"\r")
                continue
            if st.st_size < fh.tell():
                fh.seek(0)
                pending = b""
                continue
            yield IDLE
            sleep(poll)
    finally:
        if fh is not None:
            fh.close()


def _open(path: str) -> tuple[BinaryIO | None, int | None]:
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return None, None
    return fh, os.fstat(fh.fileno()).st_ino
