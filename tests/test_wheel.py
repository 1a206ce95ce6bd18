"""A non-editable install ships the pipeline files: build a wheel, install it elsewhere, run from there.

Before the pipelines moved into the package, ``pip install .`` (not editable) followed by
``skelpipe run-all demo`` failed with "unknown pipeline 'demo'; known: none".
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "skelpipe"
NAMED_PIPELINES = {"demo.toml", "ntu.toml", "penn.toml", "penn-cpu.toml", "sysu.toml"}
NAMED_DATA = {"ntu_missing_skeletons.txt"}

# Left out of the copy that is built: only at the top of the checkout (so that a package folder
# of the same name is still copied) ...
TOP_LEVEL_SKIP = {".git", ".venv", "build", "dist", "cache", "reports", ".pytest_cache"}
# ... and anywhere.
SKIP_ANYWHERE = ("__pycache__", "*.egg-info", "*.pyc")

# Runs ``python -m skelpipe ARGS...`` in-process and, at exit, writes where every skelpipe module
# it imported was loaded from (file, or folders of a package without __init__.py).
ORIGINS_PROBE = """
import atexit, json, runpy, sys
out, args = sys.argv[1], sys.argv[2:]
def dump():
    found = {}
    for name, mod in list(sys.modules.items()):
        if name == "skelpipe" or name.startswith("skelpipe."):
            where = getattr(mod, "__file__", None)
            found[name] = [where] if where else [str(p) for p in getattr(mod, "__path__", [])]
    with open(out, "w") as f:
        json.dump(found, f)
atexit.register(dump)
sys.argv = ["skelpipe", *args]
runpy.run_module("skelpipe", run_name="__main__", alter_sys=True)
"""


def _copy_checkout(dest: Path) -> Path:
    """The checkout as it is now, without its virtualenv, history and build leftovers.

    Building in place would reuse ./build/lib, where files from an earlier build linger and end up
    in the new wheel: a pipeline file dropped from the package data would still be shipped from
    there and this test would pass. A fresh copy has no ./build, and the checkout is left untouched."""

    def ignore(folder, names):
        skipped = set(shutil.ignore_patterns(*SKIP_ANYWHERE)(folder, names))
        if Path(folder) == ROOT:
            skipped |= TOP_LEVEL_SKIP & set(names)
        return skipped

    shutil.copytree(ROOT, dest, symlinks=True, ignore=ignore)
    return dest


def _run(args, cwd, env, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _said(proc) -> str:
    return " ".join((proc.stdout + proc.stderr).split())


def test_wheel_ships_pipelines_and_runs_outside_the_checkout(tmp_path):
    """The wheel holds every pipeline file, and the package installed from it alone finds them.

    The "fresh environment" is a folder the wheel is installed into (``pip install --no-deps
    --target``), put first on PYTHONPATH of the interpreter running these tests. A new virtualenv
    would need torch and the other dependencies installed again (large, and no network here);
    they are not what is checked. What is checked is that skelpipe's own files, the pipeline TOML
    files among them, come from the wheel. That interpreter also has skelpipe installed in editable
    mode, through a finder placed after the normal path search, so PYTHONPATH wins; the test
    asserts that every skelpipe module imported was loaded from the install folder, or it would
    prove nothing. The working directory is an empty folder, so no ./pipelines there is found."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip(f"setuptools is not importable in {sys.executable}; the wheel is built without "
                    "build isolation (no network), so the running environment must provide it")

    # What the source tree has: every one of these must be in the wheel.
    pipelines = {p.name: p for p in (PACKAGE / "pipelines").glob("*.toml")}
    data = {p.name: p for p in (PACKAGE / "data" / "datasets").glob("*.txt")}
    assert NAMED_PIPELINES <= set(pipelines), sorted(pipelines)
    assert NAMED_DATA <= set(data), sorted(data)

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PYTHONNOUSERSITE="1",
               COLUMNS="200")  # a wide console: the plan's title is not wrapped

    # 1. the wheel, from a clean copy of the checkout
    source = _copy_checkout(tmp_path / "source")
    wheels = tmp_path / "wheels"
    proc = _run(["-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                 "-w", str(wheels), str(source)], cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = wheels.glob("skelpipe-*.whl")

    # 2. its contents: the same bytes as in the source tree
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        expected = {f"skelpipe/pipelines/{n}": p for n, p in pipelines.items()}
        expected |= {f"skelpipe/data/datasets/{n}": p for n, p in data.items()}
        missing = sorted(set(expected) - names)
        assert not missing, f"not in {wheel.name}: {missing}"
        for member, path in expected.items():
            assert zf.read(member) == path.read_bytes(), member
    tops = {n.split("/", 1)[0] for n in names}
    assert all(t == "skelpipe" or (t.startswith("skelpipe-") and t.endswith(".dist-info")) for t in tops), tops

    # 3. installed into a folder of its own, run from an empty working directory
    site = tmp_path / "site"
    proc = _run(["-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
                cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site / "skelpipe" / "pipelines" / "demo.toml").is_file()

    empty = tmp_path / "empty"
    empty.mkdir()
    env["PYTHONPATH"] = str(site)

    # every skelpipe module the command imports comes from the install folder, not the checkout
    origins_file = tmp_path / "origins.json"
    proc = _run(["-c", ORIGINS_PROBE, str(origins_file), "run-all", "demo", "--dry-run"], cwd=empty, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    origins = json.loads(origins_file.read_text())
    assert {"skelpipe", "skelpipe.cli"} <= set(origins), sorted(origins)
    assert origins["skelpipe"] == [str(site / "skelpipe" / "__init__.py")]
    site_resolved = site.resolve()
    elsewhere = {name: where for name, where in origins.items()
                 if not where or not all(Path(w).resolve().is_relative_to(site_resolved) for w in where)}
    assert not elsewhere, f"loaded from outside {site}: {elsewhere}"
    assert not any(empty.iterdir())  # nothing there for the command to find

    # 4. the command itself
    proc = _run(["-m", "skelpipe", "run-all", "demo", "--dry-run"], cwd=empty, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "plan of demo" in _said(proc)

    proc = _run(["-m", "skelpipe", "run-all", "nosuch", "--dry-run"], cwd=empty, env=env)
    said = _said(proc)
    assert proc.returncode != 0, said
    assert "unknown pipeline 'nosuch'" in said
    assert "known:" in said, said
    known = {k.strip() for k in said.split("known:", 1)[1].split("(", 1)[0].split(",")}
    assert {Path(n).stem for n in pipelines} <= known, said
