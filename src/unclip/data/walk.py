"""Walk a folder of images following symbolic links, each real folder and file once.

``os.walk(root, followlinks=True)`` descends a symlink loop (``a/b -> ..``) until the path
grows too long, so the images under it appear many times; two links to one file count
twice. :func:`walk_images` visits each real directory once (by device and inode) and yields
each real image file once, at its first path in sorted order, so a training set or a
shard set never holds silent duplicates.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Iterator

log = logging.getLogger(__name__)


def walk_images(root: str | os.PathLike, extensions: Iterable[str]) -> Iterator[Path]:
    """Image files (by lower-case extension; hidden names skipped) under ``root``, sorted, each real file once."""
    exts = {e.lower() for e in extensions}
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    loops = duplicates = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:  # reached again through a link: a loop or a second link
            loops += 1
            dirnames[:] = []
            continue
        seen_dirs.add(key)
        dirnames.sort()
        for name in sorted(filenames):
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in exts:
                continue
            path = Path(dirpath) / name
            try:
                fst = os.stat(path)
            except OSError:
                yield path  # a dangling link: let the reader report it as unreadable
                continue
            fkey = (fst.st_dev, fst.st_ino)
            if fkey in seen_files:
                duplicates += 1
                continue
            seen_files.add(fkey)
            yield path
    if loops or duplicates:
        log.warning(
            "%s: followed each real folder and file once (%d folder(s) reached again through links, %d duplicate "
            "file link(s) left out)",
            root,
            loops,
            duplicates,
        )
