"""`tfinv.files`: whole-or-nothing files, run folders replaced in one step, destination checks."""

import os
import stat

import pytest

from tfinv import files


def test_atomic_write_keeps_the_old_content_when_the_writer_fails(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with files.atomic_write(path) as f:
            f.write("half of the new")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["metrics.json"]  # no temporary left
    files.write_bytes_atomic(path, b"new")
    assert path.read_bytes() == b"new"


def test_new_files_and_folders_get_the_umask_permissions(tmp_path):
    previous = os.umask(0o077)
    try:
        files.write_bytes_atomic(tmp_path / "a.bin", b"x")
        with files.staged_directory(tmp_path / "run") as staging:
            files.write_bytes_atomic(os.path.join(staging, "b.bin"), b"y")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o700
    assert files.default_file_mode() == 0o666 & ~previous


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_staged_directory_replaces_the_folder_whole(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(files, "_rename_exchange", lambda a, b: False)
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_text("old model")
    (run / "metrics.json").write_text("old metrics")
    (run / "notes.txt").write_text("mine")
    with pytest.raises(KeyboardInterrupt):  # a failed run changes nothing
        with files.staged_directory(run) as staging:
            open(os.path.join(staging, "model.keras"), "w").write("new model")
            raise KeyboardInterrupt
    assert (run / "model.keras").read_text() == "old model" and os.listdir(tmp_path) == ["run"]
    with files.staged_directory(run, keep=("notes.txt",)) as staging:
        open(os.path.join(staging, "model.keras"), "w").write("new model")
    assert sorted(os.listdir(run)) == ["model.keras", "notes.txt"]  # the old metrics.json is not mixed in
    assert (run / "model.keras").read_text() == "new model" and os.listdir(tmp_path) == ["run"]


def test_abandoned_staging_folders_of_dead_processes_are_removed(tmp_path):
    dead = tmp_path / ".run.staging-999999999-abc"  # no such pid
    dead.mkdir()
    with files.staged_directory(tmp_path / "run"):
        pass
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_a_symlinked_run_folder_keeps_its_link(tmp_path):
    target = tmp_path / "real"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    out = files.check_output_directory(tmp_path / "link")
    with files.staged_directory(out) as staging:
        open(os.path.join(staging, "a"), "w").write("new")
    assert (tmp_path / "link").is_symlink() and (tmp_path / "link" / "a").read_text() == "new"


def test_destination_checks(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="is an existing file, not a folder"):
        files.check_output_directory(tmp_path / "afile")
    with pytest.raises(ValueError, match="'.*afile' is a file, not a folder"):
        files.check_output_directory(tmp_path / "afile" / "sub" / "deeper")
    with pytest.raises(ValueError, match="no write permission in '/proc'"):
        files.check_output_directory("/proc/tfinv-run")
    assert files.check_output_directory(tmp_path / "new" / "run") == str(tmp_path / "new" / "run")
    with pytest.raises(ValueError, match="is a folder; expected a file path"):
        files.check_output_file(tmp_path, suffix=".png")
    with pytest.raises(ValueError, match="must end in .png"):
        files.check_output_file(tmp_path / "x.jpg", suffix=".png")
    assert not (tmp_path / "new").exists()  # checks create nothing
