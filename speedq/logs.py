"""A job's log for a reader (`speedq logs`, the API), found through the job's record.

The record carries the log pointer its worker wrote (`record.log`): a file path for the local
and sim backends, a Volume path for Modal. A reader on another machine, or with another
SPEEDQ_HOME, reads the same log; nothing is rebuilt from the reader's own settings.
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path

from speedq.schemas import JobRecord


def read(record: JobRecord, tail: int | None = None) -> str:
    """The log, or its last `tail` lines; '' before the run has one."""
    pointer = record.log
    if pointer is None:
        return ""
    if pointer.location == "local":
        from speedq.backends.local import tail_lines

        return tail_lines(Path(pointer.path), tail)
    from speedq.backends import get_backend

    return get_backend(record.spec.backend).read_log(record, tail)


class Follower:
    """What is new in a job's log since the last call: a local log is read from the offset
    reached, so each poll costs the bytes appended, not the whole log. (A Modal Volume file is
    read whole by Modal's API; only its new part is returned.)"""

    def __init__(self) -> None:
        self.offset = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def skip_to_end(self, record: JobRecord) -> None:
        """Start after what is there now (`logs --tail N --follow` printed that part already)."""
        pointer = record.log
        if pointer is None:
            return
        if pointer.location == "local":
            try:
                self.offset = os.path.getsize(pointer.path)
            except OSError:
                self.offset = 0
        else:
            self.offset = len(read(record).encode())

    def new(self, record: JobRecord) -> str:
        pointer = record.log
        if pointer is None:
            return ""
        if pointer.location != "local":
            data = read(record).encode()
        else:
            try:
                with open(pointer.path, "rb") as fh:
                    size = fh.seek(0, os.SEEK_END)
                    if size < self.offset:  # the run directory was wiped (force restart)
                        self.offset = 0
                    fh.seek(self.offset)
                    chunk = fh.read()
            except FileNotFoundError:
                return ""
            self.offset += len(chunk)
            return self._decoder.decode(chunk)
        if len(data) < self.offset:
            self.offset = 0
        chunk, self.offset = data[self.offset :], len(data)
        return self._decoder.decode(chunk)
