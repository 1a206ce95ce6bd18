"""``skelpipe install-mediapipe``: mediapipe's BlazePose (``--backbone blazepose``) in this environment.

mediapipe 0.10.21 (the wheel with the ``mp.solutions.pose`` BlazePose models) declares
``numpy<2``, ``protobuf<5`` and heavy packages its pose solution never imports (jax, jaxlib,
opencv-contrib-python, sounddevice, sentencepiece). A plain ``pip install mediapipe`` would
downgrade numpy under torch and protobuf under onnx / tensorboard. What its pose solution needs
at run time is numpy (it runs with numpy 2), OpenCV and matplotlib (skelpipe's own dependencies),
attrs and protobuf, so this command:

1. installs those runtime needs (the same list as the ``skelpipe[mediapipe]`` extra),
2. installs the mediapipe wheel with ``--no-deps``,
3. patches its one use of ``FieldDescriptor.label``, which protobuf 7 removed, in
   ``mediapipe/python/solution_base.py`` (``is_repeated`` where protobuf has it),
4. checks, in a subprocess, that a BlazePose pose solution starts.

Nothing is done when a working mediapipe is already installed.
"""

import subprocess
import sys
import time
from pathlib import Path

import click

from skelpipe.commands.install import _pip, run_check
from skelpipe.core.console import console
from skelpipe.core.errors import SkelpipeError
from skelpipe.pose.blazepose import MEDIAPIPE_VERSION

#: What mediapipe's pose solution imports beyond skelpipe's own dependencies (numpy, OpenCV,
#: matplotlib); pyproject.toml's ``mediapipe`` extra lists the same.
RUNTIME_NEEDS = ["attrs>=19.1.0", "protobuf>=4.25.3"]

_OLD = """          field_label = calculator_options.DESCRIPTOR.fields_by_name[
              field_name].label
          if field_label == descriptor.FieldDescriptor.LABEL_REPEATED:"""
_NEW = """          field = calculator_options.DESCRIPTOR.fields_by_name[field_name]
          if (field.is_repeated if hasattr(field, 'is_repeated') else  # patched by skelpipe
              field.label == descriptor.FieldDescriptor.LABEL_REPEATED):"""

_CHECK_SCRIPT = """
import json, importlib.metadata as md
out = {}
try:
    out["version"] = md.version("mediapipe")
except md.PackageNotFoundError:
    out["version"] = None
if out["version"]:
    try:
        import mediapipe
        out["location"] = mediapipe.__file__
        mediapipe.solutions.pose.Pose(model_complexity=1).close()
        out["ok"] = True
    except Exception as e:
        out["ok"] = False
        out["error"] = f"{type(e).__name__}: {e}"
print("SKELPIPE-CHECK " + json.dumps(out))
"""


def mediapipe_status(python: str = sys.executable) -> dict:
    """``{"version": str|None, "ok": bool, "location": str, "error": str}`` of mediapipe in ``python``'s
    environment, checked in a subprocess (its native code never runs in this process)."""
    return run_check(python, _CHECK_SCRIPT, ok=False)


def patch_solution_base(path: Path) -> bool:
    """Make mediapipe's ``solution_base.py`` run with protobuf 7 (no ``FieldDescriptor.label``).

    True if changed, False if already patched; an unknown file is refused.
    """
    text = path.read_text(encoding="utf-8")
    if _NEW in text:
        return False
    if _OLD not in text:
        raise SkelpipeError(f"{path}: not mediapipe {MEDIAPIPE_VERSION}'s solution_base.py (nothing to patch)")
    path.write_text(text.replace(_OLD, _NEW), encoding="utf-8")
    return True


def install_mediapipe(wheel: Path | None = None, force: bool = False) -> str:
    """Install mediapipe for ``--backbone blazepose`` into this environment; returns what was done."""
    status = mediapipe_status()
    if status.get("ok") and not force:
        return f"mediapipe {status['version']} runs BlazePose ({status['location']}); nothing to do"
    if status.get("version"):
        console.print(f"found mediapipe {status['version']} ({status.get('error', 'not usable')}): reinstalling")
    start = time.perf_counter()
    if wheel is not None and not Path(wheel).is_file():
        raise SkelpipeError(f"{wheel}: mediapipe wheel not found")
    _pip("install", *RUNTIME_NEEDS)
    _pip("install", "--no-deps", "--force-reinstall", str(wheel) if wheel else f"mediapipe=={MEDIAPIPE_VERSION}")
    found = subprocess.run([sys.executable, "-c", "import importlib.util as u; "
                            "print(u.find_spec('mediapipe').submodule_search_locations[0])"],
                           capture_output=True, text=True)
    if found.returncode != 0:
        raise SkelpipeError(f"mediapipe was installed but cannot be found: {found.stderr.strip()[-300:]}")
    solution_base = Path(found.stdout.strip()) / "python" / "solution_base.py"
    if patch_solution_base(solution_base):
        console.print(f"patched {solution_base}: FieldDescriptor.label -> is_repeated (protobuf 7)")
    status = mediapipe_status()
    if not status.get("ok"):
        raise SkelpipeError(f"mediapipe was installed but BlazePose does not start: {status.get('error')}")
    return f"installed mediapipe {status['version']} for BlazePose in {time.perf_counter() - start:.0f} s"


@click.command("install-mediapipe")
@click.option("--wheel", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help=f"Use this mediapipe-{MEDIAPIPE_VERSION} wheel instead of downloading it (offline installs).")
@click.option("--force", is_flag=True, help="Reinstall even when a working mediapipe is installed.")
def install_mediapipe_command(wheel, force):
    """Install mediapipe for --backbone blazepose, keeping numpy 2 and the installed protobuf.

    Its runtime needs first (attrs, protobuf), then the wheel without its declared
    dependencies (numpy<2, protobuf<5, jax, ...), patched for protobuf 7. Does nothing when a
    working mediapipe is already installed.

    \b
    Example:
      skelpipe install-mediapipe
      skelpipe install-mediapipe --wheel ~/Downloads/mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl
    """
    console.print(install_mediapipe(wheel=wheel, force=force), soft_wrap=True)
