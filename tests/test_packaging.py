"""Packaging: the requested top level installs as one `tfinv` package, and dependencies point one way."""

import ast
import os
import pathlib
import subprocess
import sys
import sysconfig

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_library_never_imports_export_or_serving():
    offenders = []
    for path in (REPO / "tfinv").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if name.split(".")[0] in ("export", "serving") or name.startswith(("tfinv.export", "tfinv.serving")):
                    offenders.append(f"{path.relative_to(REPO)}: {name}")
    assert not offenders, offenders


def test_non_editable_install_into_a_fresh_venv(tmp_path, tfinv_wheel):
    """`pip install .` (a built wheel, not editable; conftest.py builds it once) imports tfinv,
    tfinv.export and tfinv.serving from site-packages, ships the embedded digits, and puts no
    top-level export/serving there."""
    wheel = tfinv_wheel
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # Third-party dependencies come from this environment's site-packages (and any it adds, as a
    # worktree venv sharing another's packages does), added as plain paths: their .pth files,
    # including the editable tfinv finder, are not processed.
    own = sysconfig.get_paths()["purelib"]
    paths = [own] + [p for p in sys.path if p.endswith("site-packages") and p != own]
    pathlib.Path(site, "deps.pth").write_text("".join(f"{p}\n" for p in paths))
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-compile", "-q", str(wheel)],
        check=True, capture_output=True, timeout=300,
    )
    probe = (
        "import importlib.util, pathlib, tfinv, tfinv.export, tfinv.serving, tfinv.data;"
        "print(tfinv.__file__); print(tfinv.export.__file__); print(tfinv.serving.__file__);"
        "print(importlib.util.find_spec('export'), importlib.util.find_spec('serving'));"
        "print(pathlib.Path(tfinv.data.__file__).with_name('digits.npz').is_file())"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    tfinv_file, export_file, serving_file, stray, has_digits = out.stdout.strip().splitlines()[-5:]
    for path in (tfinv_file, export_file, serving_file):
        assert path.startswith(site), f"{path} was not imported from the fresh venv's site-packages {site}"
    assert export_file.endswith(os.path.join("tfinv", "export", "__init__.py"))
    assert serving_file.endswith(os.path.join("tfinv", "serving", "__init__.py"))
    assert stray == "None None", f"top-level export/serving packages leaked into site-packages: {stray}"
    assert has_digits == "True"
