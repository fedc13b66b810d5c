"""Writing an export whole or not at all, with the permissions the user's umask gives.

`Staging` collects every file of an export in a hidden temporary folder beside the target (same
file system, so renames are atomic) and moves them into place only once every part has been
written: a failed export leaves nothing behind and the previous files untouched. Files and
folders are created with plain ``open``/``os.mkdir`` (umask permissions), never with
``tempfile.mkstemp``/``mkdtemp``, whose 0600/0700 modes would survive the rename and hide the
export from a server running as another user.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import uuid
from typing import Iterable

from tfinv import files as tfinv_files

__all__ = ["Staging", "atomic_write", "check_destination"]


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to a temporary sibling of ``path`` and renames it into place."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _nearest_existing(path: pathlib.Path) -> pathlib.Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return pathlib.Path(".")


def check_destination(out: str | os.PathLike, files: Iterable[str], overwrite: bool) -> pathlib.Path:
    """Checks, before any work, that ``out`` can receive ``files`` (paths relative to ``out``;
    a trailing ``/`` marks a folder): every existing ancestor is a folder and writable, nothing
    to be written exists (unless ``overwrite``), and no file sits where a folder is expected
    (or the reverse).

    Raises:
        NotADirectoryError: ``out`` or an ancestor (or an intermediate folder of a file) is a file.
        IsADirectoryError: a folder sits where a file is to be written.
        FileExistsError: something to be written exists and ``overwrite`` is false.
        PermissionError: the folder the export would be created in is not writable.
    """
    out = pathlib.Path(out)
    existing = _nearest_existing(out)
    if not existing.is_dir():
        raise NotADirectoryError(f"cannot write the export to {out}: {existing} is a file, not a directory")
    if not tfinv_files.is_writable_folder(existing):  # tried: os.access says yes to root on read-only file systems
        raise PermissionError(f"cannot write the export to {out}: {existing} is not writable; "
                              "expected a writable output folder")
    clashes = []
    for relative in files:
        is_dir = relative.endswith("/")
        target = out / relative.rstrip("/")
        for parent in list(target.relative_to(out).parents)[:-1]:
            if (out / parent).exists() and not (out / parent).is_dir():
                raise NotADirectoryError(f"{out / parent} is a file where the export needs a directory")
        if not os.path.lexists(target):
            continue
        if is_dir and not target.is_dir():
            raise NotADirectoryError(f"{target} is a file where the export writes a directory")
        if not is_dir and target.is_dir():
            raise IsADirectoryError(f"{target} is a directory where the export writes a file")
        clashes.append(str(target))
    if clashes and not overwrite:
        raise FileExistsError(f"{', '.join(clashes)} already exist(s); pass overwrite=True (--overwrite) to replace")
    return out


class Staging:
    """A hidden temporary folder beside ``out`` whose entries `commit` moves into ``out``.

    Use as a context manager: leaving the block without `commit` (an error) removes the staged
    files; nothing in ``out`` has been touched. If ``out`` does not exist, the whole folder is
    staged and renamed into place at once; otherwise each staged entry (file or folder, at its
    relative path) is renamed into place, the entries listed in ``last`` at the end (the manifest:
    a reader that sees it sees every file it names).
    """

    def __init__(self, out: str | os.PathLike):
        self.out = pathlib.Path(out)
        self._fresh = not os.path.lexists(self.out)
        self.root: pathlib.Path | None = None
        self._entries: list[str] = []

    def __enter__(self) -> "Staging":
        parent = self.out.parent if self._fresh else self.out
        holder = _nearest_existing(parent)
        tag = uuid.uuid4().hex[:12]
        if self._fresh and holder.resolve() != parent.resolve():
            # The target's parents do not exist yet: stage in the nearest existing one (same file
            # system) and create the parents only at commit time.
            self.root = holder / f".{self.out.name}.tmp-{tag}"
        elif self._fresh:
            self.root = parent / f".{self.out.name}.tmp-{tag}"
        else:
            self.root = self.out / f".export.tmp-{tag}"
        os.mkdir(self.root)
        return self

    def path(self, relative: str) -> pathlib.Path:
        """Where to write the entry ``relative`` (parents created); record it for `commit`."""
        assert self.root is not None, "use Staging as a context manager"
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if relative not in self._entries:
            self._entries.append(relative)
        return target

    def commit(self, overwrite: bool, last: Iterable[str] = ()) -> None:
        """Moves every staged entry into ``out`` (``last`` after the others)."""
        assert self.root is not None
        if self._fresh:
            if os.path.lexists(self.out):
                raise FileExistsError(f"{self.out} appeared during the export; not replacing it")
            self.out.parent.mkdir(parents=True, exist_ok=True)
            os.rename(self.root, self.out)
            self.root = None
            return
        last = list(last)
        order = [e for e in self._entries if e not in last] + [e for e in last if e in self._entries]
        for relative in order:
            target = self.out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            _replace(self.root / relative, target, overwrite)

    def __exit__(self, *exc) -> None:
        if self.root is not None and os.path.lexists(self.root):
            shutil.rmtree(self.root, ignore_errors=True)


def _replace(source: pathlib.Path, target: pathlib.Path, overwrite: bool) -> None:
    """Renames ``source`` to ``target``. A file replaces a file atomically; a folder that exists is
    moved aside first and restored if the rename fails."""
    if source.is_dir():
        old = None
        if os.path.lexists(target):
            if not overwrite:
                raise FileExistsError(f"{target} appeared during the export; not replacing it")
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:12]}")
            os.rename(target, old)
        try:
            os.rename(source, target)
        except OSError:
            if old is not None:
                os.rename(old, target)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    else:
        if os.path.lexists(target) and not overwrite:
            raise FileExistsError(f"{target} appeared during the export; not replacing it")
        os.replace(source, target)
