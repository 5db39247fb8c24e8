"""Where results may be written: never over an input, a user's files, or half of an earlier run.

Rules (docs/safety.md states them for users):

* An **output folder** (``--out DIR`` of the commands that write ``NNN.png``, ``grid.png``
  and ``manifest.json``) must be new, empty, or an earlier output set of unclip: a folder
  whose every entry is listed in its ``manifest.json`` (the PNGs of ``images``,
  ``grid.png``, ``manifest.json``). Anything else in it is a user's file, and the command
  refuses to start. An earlier output set is *replaced*, never mixed with: the new set is
  written to a fresh hidden folder beside DIR and swapped in with renames once complete,
  so an interrupted run leaves the earlier set intact (:func:`replace_dir`).
* An **output file** (``unclip invert --out FILE``) may not be one of the command's
  inputs, nor an existing file that unclip did not write (:func:`check_output_file`).
* Every output path must be writable: an existing file where a folder is expected, a
  folder where a file is expected, or a read-only parent is an error before any work.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from ..errors import InputError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
GRID = "grid.png"
_TMP = ".unclip-tmp-"
_OLD = ".unclip-old-"


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest existing ancestor."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable_place(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Raise InputError unless ``path`` could be created or written (its nearest existing folder is writable)."""
    path = Path(path)
    text = str(path)
    try:
        os.fsencode(text)
    except UnicodeError:
        raise InputError(
            f"{flag} {text[:80]!r}: the path cannot be encoded for this file system; use another name"
        ) from None
    if not text or "\x00" in text or any(len(os.fsencode(part)) > 255 for part in path.parts):
        raise InputError(f"{flag} {text[:80]!r}: not a usable path (empty, a NUL character, or a name over 255 bytes)")
    base = _nearest_existing(path.absolute())
    if base == path.absolute() and not base.is_dir():
        base = base.parent  # an existing file: the caller decides whether it may be replaced
    elif not base.is_dir():
        raise InputError(f"{flag} {path}: {base} is a file, so nothing can be created under it; choose another path")
    if not _can_create_in(base):
        raise InputError(f"{flag} {path}: {base} is not writable; choose a folder you can write to")
    return path


def _can_create_in(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried: permissions alone mislead root and read-only mounts)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        fd, probe = tempfile.mkstemp(prefix=".unclip-probe-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass
    return True


def earlier_output_files(folder: Path) -> set[str] | None:
    """The entries an earlier unclip output set in ``folder`` consists of, or None when its
    ``manifest.json`` is absent or is not one of ours."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("images"), list):
        return None
    files = {MANIFEST, GRID}
    for entry in manifest["images"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            return None
        files.add(entry["file"])
    return files


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except (ValueError, OSError):
        return False


def check_output_dir(path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), flag: str = "--out") -> Path:
    """Raise InputError unless ``path`` may receive an output set (see the module docstring)."""
    path = check_writable_place(path, flag)
    if path.exists() and not path.is_dir():
        raise InputError(
            f"{flag} {path} is an existing file, not a folder; choose a folder name (it is created if missing)"
        )
    for item in inputs:
        if path.exists() and _inside(Path(item), path):
            raise InputError(
                f"the input {item} lies inside {flag} {path}, which this command replaces; "
                "write the results to another folder"
            )
    if path.is_dir():
        entries = set(os.listdir(path))
        if entries:
            ours = earlier_output_files(path)
            foreign = sorted(entries - (ours or set()))
            if foreign:
                shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
                why = (
                    "files unclip did not write"
                    if ours is not None
                    else "files and no manifest.json of an earlier unclip run"
                )
                raise InputError(
                    f"{flag} {path} holds {why} ({shown}); unclip never overwrites them: choose a new or empty folder"
                )
        if not _can_create_in(path):
            raise InputError(f"{flag} {path} is not writable; choose a folder you can write to")
    return path


def replace_dir(
    path: str | os.PathLike, write: Callable[[Path], None], inputs: Iterable[str | os.PathLike] = ()
) -> Path:
    """Write an output set with ``write(folder)`` into a fresh folder and swap it in at ``path``.

    The earlier set at ``path`` (checked by :func:`check_output_dir`) stays whole until the
    new one is complete; then two renames swap them and the earlier one is deleted. Where
    the parent cannot hold a temporary folder or the rename is impossible (a mount point),
    the set is written in place instead: the earlier set's files are removed only after the
    new files are written, and ``manifest.json`` is written last.
    """
    path = check_output_dir(path, inputs)
    parent = path.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    if _inside(Path.cwd(), path):
        return _write_in_place(path, write)  # never rename the working directory away
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP}{path.name}-", dir=parent))
    except OSError:
        return _write_in_place(path, write)
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        write(tmp)
        if path.exists():
            old = parent / f"{_OLD}{path.name}-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            try:
                os.replace(path, old)
            except OSError:
                return _write_in_place(path, write)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _write_in_place(path: Path, write: Callable[[Path], None]) -> Path:
    earlier = earlier_output_files(path) if path.is_dir() else None
    path.mkdir(parents=True, exist_ok=True)
    write(path)
    now = earlier_output_files(path) or set()
    for name in (earlier or set()) - now:
        try:
            (path / name).unlink()
        except OSError:
            pass
    logger.info("wrote %s in place (no temporary folder possible beside it)", path)
    return path


def _umask() -> int:
    from .integrity import current_umask

    return current_umask()


def check_output_file(
    path: str | os.PathLike,
    inputs: Iterable[str | os.PathLike] = (),
    *,
    suffix: str = "",
    flag: str = "--out",
    is_ours: Callable[[Path], bool] | None = None,
) -> Path:
    """Raise InputError unless ``path`` may be written as a single output file.

    It must not be an input (same file, also through links), not a folder, end in ``suffix``
    when given, and an existing file is replaced only when ``is_ours(path)`` says unclip wrote it.
    """
    path = check_writable_place(path, flag)
    if path.is_dir():
        raise InputError(f"{flag} {path} is a folder; name a file, e.g. {path / ('latent' + suffix)}")
    if suffix and path.suffix.lower() != suffix:
        stem = path.name.split(".")[0] or "latent"
        raise InputError(f"{flag} {path}: the file name must end in {suffix}, e.g. {stem}{suffix}")
    for item in inputs:
        try:
            same = Path(item).exists() and path.exists() and os.path.samefile(item, path)
        except OSError:
            same = False
        if same or Path(item).absolute() == path.absolute():
            raise InputError(
                f"{flag} {path} is the input {item}; writing there would destroy it: choose another file name"
            )
    if path.exists() and (is_ours is None or not is_ours(path)):
        raise InputError(
            f"{flag} {path} exists and was not written by unclip; choose a new file name or move it away first"
        )
    return path
