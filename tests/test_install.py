"""install-openpifpaf (idempotence, the setup.py and matplotlib patches) and doctor."""

import subprocess
import sys
import textwrap
import time

import pytest

from skelpipe.commands import install


def test_cxx_standard_fits_torch():
    assert install.cxx_standard("2.14.1+cu130") == "c++20"
    assert install.cxx_standard("3.0.0") == "c++20"
    assert install.cxx_standard("2.13.0") == "c++17"
    assert install.cxx_standard("2.4.1") == "c++17"


def test_patch_setup_py_replaces_the_standard(tmp_path):
    setup = tmp_path / "setup.py"
    setup.write_text(textwrap.dedent("""
        import sys
        extra_compile_args = [
            '-std=c++17' if not sys.platform.startswith('win') else '/std:c++17',
        ]
    """))
    assert install.patch_setup_py(setup, "c++20") is True
    text = setup.read_text()
    assert "'-std=c++20'" in text and "'/std:c++20'" in text and "c++17" not in text
    assert install.patch_setup_py(setup, "c++20") is False  # already patched: unchanged, no error
    compile(text, str(setup), "exec")


def test_patch_setup_py_rejects_unknown_file(tmp_path):
    setup = tmp_path / "setup.py"
    setup.write_text("print('hello')\n")
    with pytest.raises(install.SkelpipeError, match="setup.py"):
        install.patch_setup_py(setup, "c++20")


def test_patch_get_cmap_makes_visualizers_importable(tmp_path):
    pkg = tmp_path / "src"
    pkg.mkdir()
    (pkg / "caf.py").write_text(textwrap.dedent("""
        import copy
        try:
            import matplotlib.cm
            CMAP = copy.copy(matplotlib.cm.get_cmap('Blues'))
        except ImportError:
            CMAP = None
    """))
    (pkg / "constants.py").write_text(textwrap.dedent("""
        try:
            import matplotlib.cm as mplcm
        except ImportError:
            pass
        def color(i):
            return mplcm.get_cmap('tab20')((i % 20 + 0.05) / 20)
    """))
    (pkg / "other.py").write_text("x = 1\n")
    changed = install.patch_get_cmap(pkg)
    assert sorted(p.name for p in changed) == ["caf.py", "constants.py"]
    ns = {}
    exec(compile((pkg / "caf.py").read_text(), "caf.py", "exec"), ns)
    assert ns["CMAP"].name == "Blues"
    ns = {}
    exec(compile((pkg / "constants.py").read_text(), "constants.py", "exec"), ns)
    assert len(ns["color"](3)) == 4  # an RGBA tuple
    assert "get_cmap" not in (pkg / "constants.py").read_text().replace("colormaps.get_cmap", "")


def test_install_openpifpaf_is_idempotent():
    """In the real environment (already installed by the set-up command) a run detects it and does nothing."""
    if not install.is_ready(install.openpifpaf_status()):
        pytest.skip("openpifpaf is not installed here; run `skelpipe install-openpifpaf` first")
    import importlib.metadata as md

    record = md.distribution("openpifpaf").locate_file("openpifpaf/__init__.py")
    before = record.stat().st_mtime
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "skelpipe", "install-openpifpaf"], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    said = " ".join((proc.stderr + proc.stdout).split())
    assert "already installed" in said and "nothing to do" in said
    assert "-m pip" not in said  # no pip call
    assert record.stat().st_mtime == before
    assert elapsed < 60  # a subprocess importing torch and openpifpaf; no build


def test_importing_skelpipe_does_not_import_openpifpaf():
    code = ("import sys, skelpipe, skelpipe.cli, skelpipe.commands.install, skelpipe.pose.extract, skelpipe.pose.decoding, "
            "skelpipe.pose.tracking, skelpipe.pose.video, skelpipe.core.device; print('openpifpaf' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_doctor_reports_each_check(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    rows, fixes = install.doctor_checks()
    names = [r[0] for r in rows]
    assert {"torch", "CUDA", "openpifpaf", "checkpoint shufflenetv2k16"} <= set(names)
    # an empty hub dir: every named checkpoint missing, each with its exact download command
    missing = [r for r in rows if r[0].startswith("checkpoint ") and not r[1]]
    assert len(missing) == len(install.CHECKPOINT_URLS)
    ck = tmp_path / "torch" / "hub" / "checkpoints"
    assert any(f"curl -L -o {ck}/shufflenetv2k16-" in f for f in fixes)
    (ck).mkdir(parents=True)
    (ck / install.CHECKPOINT_URLS["resnet50"].rsplit("/", 1)[1]).write_bytes(b"x")
    rows, fixes = install.doctor_checks()
    assert dict((r[0], r[1]) for r in rows)["checkpoint resnet50"] is True


def test_torch_upgrade_means_rebuild(monkeypatch):
    ok = {"version": "0.13.11", "cpp": True, "torch": "2.14.1", "built_for_torch": "2.14.1", "location": "/x"}
    assert install.is_ready(ok)
    assert install.is_ready({**ok, "built_for_torch": None})  # not built by us but loads: accepted
    assert not install.is_ready({**ok, "torch": "2.15.0"})
    assert not install.is_ready({**ok, "version": "0.13.0"})
    assert not install.is_ready({**ok, "cpp": False})
    monkeypatch.setattr(install, "openpifpaf_status", lambda python=None: {**ok, "torch": "2.15.0"})
    rows, fixes = install.doctor_checks()
    status = {r[0]: r for r in rows}
    assert status["openpifpaf._cpp"][1] is False and "built for torch 2.14.1, torch is 2.15.0" in status["openpifpaf._cpp"][2]
    assert any(f.endswith("-m skelpipe install-openpifpaf") for f in fixes)
