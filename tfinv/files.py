"""Files written whole or not at all, and run folders replaced in one step.

* `atomic_write` / `write_bytes_atomic` / `save_model_atomic`: the content goes to a temporary
  file in the destination's folder, is flushed to disk, gets the permissions the user's umask
  gives a new file (``0o666 & ~umask``, not the ``0o600`` of a temporary file), and is renamed over
  the destination (`os.replace`). A reader sees the old file or the new one, never a part.
* `staged_directory`: a run's outputs are written into a staging folder beside the destination
  folder, which then takes the destination's place in one ``renameat2(RENAME_EXCHANGE)`` (Linux;
  elsewhere two renames, see `replace_directory`). A killed run leaves the previous run's folder
  untouched; a finished run's folder never mixes files of two runs.
* `check_output_directory` / `check_output_file`: destinations checked *before* the work starts,
  so a long training run never ends in a traceback about its output path.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import shutil
import tempfile
from typing import IO, Iterator

__all__ = [
    "atomic_write",
    "check_output_directory",
    "check_output_file",
    "default_file_mode",
    "is_writable_folder",
    "replace_directory",
    "save_model_atomic",
    "staged_directory",
    "write_bytes_atomic",
]


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc/self/status``)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but brief)
    os.umask(mask)
    return mask


def default_file_mode(directory: bool = False) -> int:
    """Permission bits a new file (``0o666``) or folder (``0o777``) gets under the current umask."""
    return (0o777 if directory else 0o666) & ~_umask()


def _temporary_path(path: str, suffix: str = "") -> tuple[int, str]:
    folder = os.path.dirname(os.path.abspath(path))
    return tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=f".tmp{suffix}", dir=folder)


def _fsync_directory(folder: str) -> None:
    with contextlib.suppress(OSError):  # not every platform/filesystem can fsync a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _replacing(path: str, suffix: str = "") -> Iterator[tuple[int, str]]:
    """Yields ``(fd, tmp)``, a new temporary file beside ``path``. When the block ends normally
    the file gets the umask's permissions and is renamed onto ``path``; if it raises, the file is
    removed and ``path`` keeps its previous content."""
    fd, tmp = _temporary_path(path, suffix=suffix)
    try:
        yield fd, tmp
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(os.path.dirname(os.path.abspath(path)))


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Opens a temporary file beside ``path`` for writing; on success renames it to ``path``.

    If the block raises (or the process dies), ``path`` keeps its previous content and the
    temporary file is removed (or, after SIGKILL, left as a hidden ``.NAME.*.tmp`` file).
    """
    if "w" not in mode:
        raise ValueError(f"atomic_write opens files for writing ('w' or 'wb'), got mode {mode!r}")
    with _replacing(os.fspath(path)) as (fd, _):
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` whole or not at all (see `atomic_write`)."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def save_model_atomic(model, path: str | os.PathLike) -> None:
    """``model.save(path)`` through a temporary ``.keras`` file renamed into place."""
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"a model file must end in .keras, got {path!r}")
    with _replacing(path, suffix=".keras") as (fd, tmp):
        os.close(fd)
        model.save(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())


# ---------------------------------------------------------------- folders
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _rename_exchange(a: str, b: str) -> bool:
    """Swaps two existing paths atomically (Linux ``renameat2``); False where unsupported."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # kernel or filesystem without RENAME_EXCHANGE
    raise OSError(code, os.strerror(code), a)


def replace_directory(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Puts folder ``source`` at ``destination`` and removes the folder that was there.

    Where ``renameat2(RENAME_EXCHANGE)`` works (Linux), the swap is one atomic step: every reader
    sees the old folder or the new one. Elsewhere the old folder is first renamed aside
    (``.NAME.old-PID``): a crash between the two renames leaves both folders whole, side by side,
    and ``destination`` missing — never a folder mixing the two.
    """
    source, destination = os.path.abspath(source), os.path.abspath(destination)
    if not os.path.lexists(destination):
        os.rename(source, destination)
    elif _rename_exchange(source, destination):
        shutil.rmtree(source, ignore_errors=True)  # now holds the old folder
    else:
        parent, name = os.path.split(destination)
        aside = os.path.join(parent, f".{name}.old-{os.getpid()}")
        os.rename(destination, aside)
        os.rename(source, destination)
        shutil.rmtree(aside, ignore_errors=True)
    _fsync_directory(os.path.dirname(destination))


@contextlib.contextmanager
def staged_directory(destination: str | os.PathLike, keep: tuple[str, ...] = ()) -> Iterator[str]:
    """Yields an empty staging folder beside ``destination``; when the block succeeds, the staging
    folder replaces ``destination`` (`replace_directory`). If the block raises, ``destination`` is
    untouched and the staging folder removed.

    Args:
        destination: the folder the outputs belong in (its parent must exist and be writable).
        keep: names of entries of an existing ``destination`` moved into the new folder (each a
            single rename) just before the swap, e.g. files the run does not rewrite.
    """
    destination = os.path.abspath(os.fspath(destination))
    parent, name = os.path.split(destination)
    _remove_abandoned_staging(parent, name)
    staging = tempfile.mkdtemp(prefix=f".{name}.staging-{os.getpid()}-", dir=parent)
    try:
        os.chmod(staging, default_file_mode(directory=True))
        yield staging
        for entry in keep:
            old = os.path.join(destination, entry)
            if os.path.lexists(old) and not os.path.lexists(os.path.join(staging, entry)):
                os.rename(old, os.path.join(staging, entry))
        replace_directory(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _remove_abandoned_staging(parent: str, name: str) -> None:
    """Removes staging folders of ``name`` left by processes that no longer run (killed mid-save)."""
    prefix = f".{name}.staging-"
    for entry in os.listdir(parent):
        if not entry.startswith(prefix):
            continue
        pid = entry[len(prefix):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


# ---------------------------------------------------------------- destination checks
def is_writable_folder(folder: str | os.PathLike) -> bool:
    """True if a file can be created in ``folder`` (tried, not inferred from mode bits, which say
    nothing for root or on read-only filesystems such as ``/sys``)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".tfinv-write-probe-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


def _first_existing_ancestor(path: str) -> str:
    current = path
    while not os.path.lexists(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def _check_creatable(path: str, what: str) -> None:
    """``path`` does not exist: its nearest existing ancestor must be a writable folder."""
    ancestor = _first_existing_ancestor(path)
    if not os.path.isdir(ancestor):
        raise ValueError(f"{what} {path!r} cannot be created: {ancestor!r} is a file, not a folder")
    if not is_writable_folder(ancestor):
        raise ValueError(f"{what} {path!r} cannot be created: no write permission in {ancestor!r}")


def check_output_directory(path: str | os.PathLike, what: str = "output folder") -> str:
    """Checks that ``path`` can become (or be replaced by) a folder of outputs; returns it absolute.

    Accepted: a missing path whose nearest existing ancestor is a writable folder, or an existing
    folder whose parent is writable (the staging folder is created beside it and swapped in). A
    symlink to a folder is resolved: the folder it points to is the one replaced.

    Raises:
        ValueError: ``path`` is an existing file, lies under a file, or a folder that would need
            writing is not writable; the message names the offending path.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.lexists(path):
        if not os.path.isdir(path):
            raise ValueError(f"{what} {path!r} is an existing file, not a folder")
        path = os.path.realpath(path)  # a symlinked run folder: replace its target, keep the link
        parent = os.path.dirname(path)
        if not is_writable_folder(parent):
            raise ValueError(
                f"{what} {path!r}: no write permission in its parent {parent!r} "
                "(outputs are staged beside the folder, then swapped in)"
            )
        if not is_writable_folder(path):
            raise ValueError(f"{what} {path!r} is not writable")
        return path
    _check_creatable(path, what)
    return path


def check_output_file(path: str | os.PathLike, what: str = "output file", suffix: str | None = None) -> str:
    """Checks that a file can be written at ``path`` (created or replaced); returns it absolute.

    Raises:
        ValueError: ``path`` is a folder, lies under a file, its folder is not writable, or it
            lacks ``suffix``.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is a folder; expected a file path")
    if suffix is not None and not path.endswith(suffix):
        raise ValueError(f"{what} {path!r} must end in {suffix}")
    folder = os.path.dirname(path)
    if os.path.isdir(folder):
        if not is_writable_folder(folder):
            raise ValueError(f"{what} {path!r}: no write permission in {folder!r}")
    else:
        _check_creatable(path, what)
    return path
