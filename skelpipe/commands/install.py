"""Set-up of OpenPifPaf and a health check of the environment.

OpenPifPaf 0.13.11 (its last release) pins torch 1.13.1, which no current Python can install, so
``skelpipe install-openpifpaf`` builds it from its sdist against the torch already installed:

1. download the sdist (``pip download --no-deps --no-binary :all: --no-build-isolation``),
2. patch the unpacked sources: the C++ standard in ``setup.py`` is set to fit this torch
   (``-std=c++20`` for torch >= 2.14, whose headers need it; ``-std=c++17`` before), and
   ``matplotlib.cm.get_cmap`` (removed in matplotlib 3.9, called when openpifpaf is imported) is
   replaced by ``matplotlib.colormaps.get_cmap`` -- patching the build rather than shimming at
   import keeps ``python -m openpifpaf.video`` and other openpifpaf tools working too,
3. install its runtime needs, then ``pip install --no-deps --no-build-isolation`` the patched tree,
4. check that ``import openpifpaf`` loads the native extension ``openpifpaf._cpp``.

Nothing is done when openpifpaf 0.13.11 is already importable with its extension. All checks of
openpifpaf run in a subprocess: importing skelpipe never imports openpifpaf.
"""

import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import click
from rich.table import Table

from skelpipe.core.console import console
from skelpipe.core.errors import SkelpipeError

OPENPIFPAF_VERSION = "0.13.11"
#: openpifpaf's runtime needs (its setup.py ``install_requires`` minus the torch pins; scipy for its
#: transforms and pose similarity). torch and torchvision must already be installed.
RUNTIME_NEEDS = ["numpy>=1.16", "pillow!=8.3.0", "pysparkling", "python-json-logger", "scipy"]

#: The named checkpoints of openpifpaf 0.13.11's COCO keypoint plugin (file names in
#: ``torch.hub.get_dir()/checkpoints/``); kept here so that ``doctor`` needs no openpifpaf import.
_TORCHHUB = "http://github.com/openpifpaf/torchhub/releases/download/v0.13/"
CHECKPOINT_URLS = {
    "shufflenetv2k16": _TORCHHUB + "shufflenetv2k16-210820-232500-cocokp-slurm726069-edge513-o10s-7189450a.pkl",
    "shufflenetv2k30": _TORCHHUB + "shufflenetv2k30-210821-003923-cocokp-slurm726072-edge513-o10s-5fe1c400.pkl",
    "resnet50": _TORCHHUB + "resnet50-210830-150728-cocokp-slurm728641-edge513-o10s-ecd30da4.pkl",
    "mobilenetv3small": _TORCHHUB + "mobilenetv3small-210822-213409-cocokp-slurm726252-edge513-o10s-803b24ae.pkl",
    "mobilenetv3large": _TORCHHUB + "mobilenetv3large-210820-184901-cocokp-slurm725985-edge513-o10s-6c76cbfb.pkl",
    "mobilenetv2": ("http://github.com/vita-epfl/openpifpaf-torchhub/releases/download/v0.12a5/"
                    "mobilenetv2-201112-193315-cocokp-1728a9f5.pkl"),
}

_CHECK_SCRIPT = """
import json, importlib.metadata as md
out = {}
try:
    out["version"] = md.version("openpifpaf")
except md.PackageNotFoundError:
    out["version"] = None
if out["version"]:
    try:
        import os, torch, openpifpaf
        torch.classes.openpifpaf_decoder.CifCaf  # the native decoder class registered by openpifpaf._cpp
        out["cpp"] = True
        out["location"] = openpifpaf.__file__
        out["torch"] = torch.__version__
        stamp = os.path.join(os.path.dirname(openpifpaf.__file__), "skelpipe_build.json")
        out["built_for_torch"] = json.load(open(stamp))["torch"] if os.path.exists(stamp) else None
    except Exception as e:
        out["cpp"] = False
        out["error"] = f"{type(e).__name__}: {e}"
print("SKELPIPE-CHECK " + json.dumps(out))
"""


def openpifpaf_status(python: str = sys.executable) -> dict:
    """``{"version": str|None, "cpp": bool, "error": str}`` of openpifpaf in ``python``'s environment.

    Runs in a subprocess, so the calling process never imports openpifpaf (nor crashes with it).
    """
    return run_check(python, _CHECK_SCRIPT, cpp=False)


def run_check(python: str, script: str, **failed) -> dict:
    """What ``script`` prints after ``SKELPIPE-CHECK `` (JSON), run by ``python`` in a subprocess;
    when it crashes, no version, ``failed`` and the last line it wrote as the error."""
    proc = subprocess.run([python, "-c", script], capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("SKELPIPE-CHECK "):
            return json.loads(line[len("SKELPIPE-CHECK "):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"version": None, **failed, "error": f"check crashed (exit {proc.returncode}): {tail}"}


def is_ready(status: dict) -> bool:
    """openpifpaf 0.13.11 whose native extension loads and was built (by us) for the torch now installed.

    A C++ extension built against another torch version may load and then crash in its calls, so a
    torch upgrade means a rebuild. An install without our build stamp is accepted when it loads.
    """
    built = status.get("built_for_torch")
    return (status.get("version") == OPENPIFPAF_VERSION and bool(status.get("cpp"))
            and (built is None or built == status.get("torch")))


def cxx_standard(torch_version: str) -> str:
    """The C++ standard to build openpifpaf's extension against this torch: c++20 from 2.14 on."""
    major, minor = (int(x) for x in re.match(r"(\d+)\.(\d+)", torch_version).groups())
    return "c++20" if (major, minor) >= (2, 14) else "c++17"


def patch_setup_py(path: Path, standard: str) -> bool:
    """Replace the hard-coded ``-std=c++17`` / ``/std:c++17`` of openpifpaf's setup.py. True if changed."""
    text = path.read_text()
    new = text.replace("'-std=c++17'", f"'-std={standard}'").replace("'/std:c++17'", f"'/std:{standard}'")
    if new == text and f"std={standard}" not in text and f"std:{standard}" not in text:
        raise SkelpipeError(f"{path}: no '-std=c++17' flag found to replace; not the expected openpifpaf setup.py")
    path.write_text(new)
    return new != text


def patch_get_cmap(src_dir: Path) -> list[Path]:
    """Rewrite ``matplotlib.cm.get_cmap(...)`` (gone since matplotlib 3.9) to ``matplotlib.colormaps.get_cmap``.

    Returns the files changed. Files that import ``matplotlib.cm as mplcm`` also get ``import matplotlib``.
    """
    changed = []
    for py in sorted(src_dir.rglob("*.py")):
        text = py.read_text(encoding="utf-8")
        if "get_cmap(" not in text:
            continue
        new = re.sub(r"\b(?:matplotlib\.cm|mplcm)\.get_cmap\(", "matplotlib.colormaps.get_cmap(", text)
        new = re.sub(r"^(\s*)import matplotlib\.cm as mplcm$", r"\1import matplotlib.cm as mplcm\n\1import matplotlib",
                     new, flags=re.M)
        if new != text:
            py.write_text(new, encoding="utf-8")
            changed.append(py)
    return changed


def _pip(*args: str, env=None) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    console.print(f"$ {' '.join(cmd)}", soft_wrap=True, markup=False, highlight=False)
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        console.print(proc.stdout[-4000:], markup=False, highlight=False)
        raise SkelpipeError(f"pip {args[0]} failed (exit {proc.returncode}); see its output above")


def install_openpifpaf(sdist: Path | None = None, force: bool = False) -> str:
    """Build and install openpifpaf 0.13.11 into this environment; returns what was done (one line)."""
    status = openpifpaf_status()
    if is_ready(status) and not force:
        return (f"openpifpaf {OPENPIFPAF_VERSION} with its native extension is already installed "
                f"({status['location']}); nothing to do")
    try:
        import torch
    except ImportError as e:
        raise SkelpipeError(f"torch is not importable ({e}): install torch and torchvision first "
                            f"({sys.executable} -m pip install torch torchvision)") from e
    try:
        import torchvision  # noqa: F401  (openpifpaf's networks need it)
    except ImportError as e:
        raise SkelpipeError(f"torchvision is not importable ({e}): {sys.executable} -m pip install torchvision "
                            f"(the build matching torch {torch.__version__})") from e

    start = time.perf_counter()
    standard = cxx_standard(torch.__version__)
    console.print(f"installing openpifpaf {OPENPIFPAF_VERSION} for torch {torch.__version__} "
                  f"(C++ standard {standard}) into {sys.prefix}")
    if status.get("built_for_torch") and status.get("built_for_torch") != status.get("torch"):
        console.print(f"found openpifpaf built for torch {status['built_for_torch']}, but torch is now "
                      f"{status['torch']}: rebuilding")
    elif status.get("version"):
        state = "native extension ok" if status.get("cpp") else status.get("error", "not usable")
        console.print(f"found openpifpaf {status['version']} ({state}): replacing it")
    with tempfile.TemporaryDirectory(prefix="skelpipe-openpifpaf-") as tmp:
        tmp = Path(tmp)
        if sdist is None:
            _pip("download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
                 f"openpifpaf=={OPENPIFPAF_VERSION}", "-d", str(tmp))
            sdist = tmp / f"openpifpaf-{OPENPIFPAF_VERSION}.tar.gz"
        if not Path(sdist).is_file():
            raise SkelpipeError(f"{sdist}: openpifpaf sdist not found")
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp / "src", filter="data")
        (tree,) = [p for p in (tmp / "src").iterdir() if p.is_dir()]
        patch_setup_py(tree / "setup.py", standard)
        console.print(f"patched setup.py: -std={standard}")
        changed = patch_get_cmap(tree / "src" / "openpifpaf")
        console.print(f"patched matplotlib.cm.get_cmap -> matplotlib.colormaps.get_cmap in {len(changed)} files")
        _pip("install", *RUNTIME_NEEDS)
        env = dict(os.environ, MAX_JOBS=str(os.cpu_count() or 1))
        _pip("install", "--no-deps", "--no-build-isolation", "--force-reinstall", str(tree), env=env)

    status = openpifpaf_status()
    if not status.get("cpp"):
        raise SkelpipeError(f"openpifpaf was built but does not load: {status.get('error')}")
    stamp = Path(status["location"]).parent / "skelpipe_build.json"
    stamp.write_text(json.dumps({"torch": torch.__version__, "cxx": standard, "openpifpaf": OPENPIFPAF_VERSION}))
    return (f"installed openpifpaf {OPENPIFPAF_VERSION} with its native extension "
            f"in {time.perf_counter() - start:.0f} s")


@click.command("install-openpifpaf")
@click.option("--sdist", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Use this openpifpaf-0.13.11.tar.gz instead of downloading it (offline installs).")
@click.option("--force", is_flag=True, help="Rebuild even when a working openpifpaf is installed.")
def install_openpifpaf_command(sdist, force):
    """Build and install OpenPifPaf 0.13.11 from its sdist against the installed torch.

    No build isolation and no dependency resolution against its obsolete torch pins; the C++
    standard fits this torch; matplotlib >= 3.9 compatibility is patched in. Does nothing when a
    working openpifpaf 0.13.11 is already installed.

    \b
    Example:
      skelpipe install-openpifpaf
      skelpipe install-openpifpaf --sdist ~/Downloads/openpifpaf-0.13.11.tar.gz
    """
    console.print(install_openpifpaf(sdist=sdist, force=force), soft_wrap=True)


def cached_checkpoints() -> tuple[Path, dict[str, Path | None], list[Path]]:
    """(hub checkpoint dir, {name: path or None for each named checkpoint}, all files found there)."""
    import torch

    folder = Path(torch.hub.get_dir()) / "checkpoints"
    named = {}
    for name, url in CHECKPOINT_URLS.items():
        path = folder / os.path.basename(url)
        named[name] = path if path.is_file() else None
    files = sorted(folder.glob("*")) if folder.is_dir() else []
    return folder, named, files


@click.command("doctor")
def doctor_command():
    """Check torch, CUDA, OpenPifPaf (and its native extension) and cached checkpoints.

    Prints one row per check, then, for anything missing, the exact command that fixes it.

    \b
    Example:
      skelpipe doctor
    """
    rows, fixes = doctor_checks()
    table = Table(title="skelpipe doctor")
    table.add_column("check")
    table.add_column("status")
    for name, ok, text in rows:
        table.add_row(name, text if ok else f"[red]{text}[/red]")
    console.print(table)
    if fixes:
        console.print("[bold]to fix:[/bold]")
        for line in fixes:
            console.print(f"  {line}", soft_wrap=True, markup=False, highlight=False)
    else:
        console.print("everything needed is in place")


def doctor_checks() -> tuple[list[tuple[str, bool, str]], list[str]]:
    """([(check, ok, status text)], [fix commands]) for torch, CUDA, openpifpaf and checkpoints."""
    py = sys.executable
    rows = [("python", True, f"{sys.version.split()[0]} ({py})")]
    fixes = []
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - report whatever breaks the import
        rows.append(("torch", False, f"not importable: {e}"))
        return rows, [f"{py} -m pip install torch torchvision"]
    rows.append(("torch", True, torch.__version__))
    try:
        import torchvision
        rows.append(("torchvision", True, torchvision.__version__))
    except Exception as e:  # noqa: BLE001
        rows.append(("torchvision", False, f"not importable: {e}"))
        fixes.append(f"{py} -m pip install torchvision")
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        rows.append(("CUDA", True, f"CUDA {torch.version.cuda}: {names}"))
    else:
        built = f"torch built with CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only torch build"
        rows.append(("CUDA", True, f"no GPU usable ({built}); extraction and training run on CPU"))
    status = openpifpaf_status()
    if status.get("version") is None:
        rows.append(("openpifpaf", False, "not installed"))
        fixes.append(f"{py} -m skelpipe install-openpifpaf")
    elif not is_ready(status):
        rows.append(("openpifpaf", status["version"] == OPENPIFPAF_VERSION, status["version"]))
        why = status.get("error") or (f"built for torch {status['built_for_torch']}, torch is {status['torch']}"
                                      if status.get("cpp") else f"need version {OPENPIFPAF_VERSION}")
        rows.append(("openpifpaf._cpp", False, why))
        fixes.append(f"{py} -m skelpipe install-openpifpaf")
    else:
        rows.append(("openpifpaf", True, status["version"]))
        built = status.get("built_for_torch")
        rows.append(("openpifpaf._cpp", True, "native decoder loads"
                     + (f" (built for torch {built})" if built else " (not built by skelpipe)")))
    folder, named, files = cached_checkpoints()
    for name, path in named.items():
        rows.append((f"checkpoint {name}", path is not None,
                     str(path) if path else f"not cached in {folder} (needed only to extract with it)"))
        if path is None:
            url = CHECKPOINT_URLS[name]
            fixes.append(f"mkdir -p {folder} && curl -L -o {folder / os.path.basename(url)} {url}"
                         f"   # or run `skelpipe extract --backbone {name} ...` once online")
    others = [f.name for f in files if f not in set(named.values())]
    if others:
        rows.append(("other checkpoints", True, ", ".join(others)))
    try:
        import tensorboard
        rows.append(("tensorboard", True, f"{tensorboard.__version__}: training writes event files"))
    except ImportError:
        rows.append(("tensorboard", True, "not installed (optional): training writes metrics.jsonl only"))
        fixes.append(f"{py} -m pip install 'skelpipe[tensorboard]'   # optional: TensorBoard event files")
    return rows, fixes
