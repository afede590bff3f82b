"""Uploaded data sets: the rules for a stored upload (a safe unique name with a data set
extension, not empty, within the size limit, no partial file on a full disk) and the listing.
POST /api/datasets and the dashboard's upload box both store through here.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from pathlib import Path

from modelforge_ui.api.errors import ApiError, disk_full
from modelforge_ui.settings import Settings
from trainers.data import EXTENSIONS

MAX_NAME = 200  # of a stored upload: file systems take 255 bytes; room for the "-N" of a repeat
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_upload_lock = threading.Lock()


def safe_filename(filename: str | None) -> str:
    """The upload's base name with only safe characters, cut to MAX_NAME, or ApiError(422)."""
    base = re.split(r"[\\/]", filename or "")[-1]
    name = _SAFE_NAME.sub("_", base).lstrip(".")
    suffix = Path(name).suffix.lower()
    if not name or suffix not in EXTENSIONS:
        raise ApiError(422, "data", f"Cannot store {filename!r}: data sets must be "
                                    f"{', '.join(EXTENSIONS)} files.",
                       "Rename the file with one of those extensions.",
                       [{"field": "file", "message": "needs a .json, .jsonl, .csv or .parquet "
                                                     "name"}])
    if len(name) > MAX_NAME:  # only ASCII is left: characters are bytes
        name = name[:MAX_NAME - len(suffix)] + name[-len(suffix):]
    return name


def store_upload(source, filename: str | None, settings: Settings) -> Path:
    """Copy the upload (a binary file object) into the upload directory under a new safe name;
    enforce the size limit. A full disk is ApiError(507), and no partial file stays."""
    name = safe_filename(filename)
    try:
        return _store(source, name, settings)
    except OSError as exc:
        if (full := disk_full(exc)) is None:
            raise
        raise full from None


def _store(source, name: str, settings: Settings) -> Path:
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=settings.uploads_dir, prefix=".upload-", suffix=".part")
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(2**20):
                size += len(chunk)
                if size > settings.max_upload_bytes:
                    raise ApiError(413, "too_large",
                                   f"The file is larger than the upload limit of "
                                   f"{settings.max_upload_mb:g} MiB.",
                                   "Ask the operator to raise --max-upload-mb, or put the file "
                                   "under an allowed root on the server.")
                out.write(chunk)
        if size == 0:
            raise ApiError(422, "data", "The uploaded file is empty.", "Upload a non-empty file.")
        with _upload_lock:  # never overwrite an earlier upload
            dest, n = settings.uploads_dir / name, 1
            while dest.exists():
                dest = settings.uploads_dir / f"{Path(name).stem}-{n}{Path(name).suffix}"
                n += 1
            os.replace(tmp, dest)
        return dest
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def list_uploads(settings: Settings) -> list[dict]:
    """The stored uploads, newest first: name, path, size_bytes, modified."""
    folder = settings.uploads_dir
    found = []
    for path in (folder.iterdir() if folder.is_dir() else []):
        try:  # a file deleted while we list is simply not listed
            info = path.stat()
        except FileNotFoundError:
            continue
        if path.is_file() and not path.name.startswith("."):
            found.append({"name": path.name, "path": str(path), "size_bytes": info.st_size,
                          "modified": info.st_mtime})
    return sorted(found, key=lambda d: d["modified"], reverse=True)
