"""The package's one file writer: atomic, with the permissions the user's umask gives.

Every file perfscope writes (``-o`` outputs, reports, figures, saved specs, snapshots) goes
through ``write_atomic``: a temporary file in the same folder, then ``os.replace``, so a
reader never sees half a file and a failure leaves nothing behind. A missing parent folder is
an error (a typo in ``-o`` should not create directories), except where a caller owns the
folder and passes ``make_parents=True`` (the default reports/ folder, the local spec).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | Path, data: str | bytes, *, what: str = "--output",
                 make_parents: bool = False) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically; returns the path.

    Raises InputError naming ``what`` (the flag or setting the path came from) when the
    folder is missing or not writable."""
    from perfscope.errors import InputError

    path = Path(path)
    parent = path.parent
    if make_parents:
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"{what} {path}: cannot create {parent} ({e.strerror or e}); "
                             "choose a writable location") from e
    elif not parent.is_dir():
        raise InputError(f"{what} {path}: the folder {parent} does not exist; create it "
                         "first or choose another path")
    if path.is_dir():
        raise InputError(f"{what} {path}: is a folder; give a file name")
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise InputError(f"{what} {path}: cannot write there ({e.strerror or e}); "
                         "choose a writable file path") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        # mkstemp creates 0600; a written report should be as readable as any other file
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise InputError(f"{what} {path}: cannot write there ({e.strerror or e}); "
                             "choose a writable file path") from e
        raise
    return path
