"""Small file-system helpers shared by the modules that write node files atomically."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["fsync_dir"]


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable (best effort).

    Why: ``os.replace`` and ``os.link`` change the directory, not the file; until the
    directory itself is fsynced a crash can bring the old name back. Some file systems
    refuse to open or fsync a directory; that only weakens durability, so it is ignored.
    """
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
