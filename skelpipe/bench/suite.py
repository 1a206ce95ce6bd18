"""``skelpipe bench all``: everything the performance targets speak of, each figure beside its
reference measured in the same call (the original ST-GCN release, ``python -m openpifpaf.video``),
into one report (``run_suite``).

Every measurement runs in a child process of its own (``skelpipe bench train|extract|memory
--json`` or the reference script), so that peak memory is each one's own, and the reference
and skelpipe alternate (reference, skelpipe, reference, skelpipe, …) so that a machine whose
speed drifts shows it as spread, not as a ratio.
"""

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from skelpipe.bench.inputs import synthetic_clip
from skelpipe.bench.report import DEMO_CHANNELS, figures
from skelpipe.core import atomic
from skelpipe.core.console import console
from skelpipe.core.device import native_bf16, resolve
from skelpipe.core.errors import SkelpipeError
from skelpipe.data.split import physical_memory

REFERENCE_ENV = "SKELPIPE_REFERENCE_STGCN"


@dataclass(frozen=True)
class Suite:
    """The settings of ``skelpipe bench all`` (its options' help says what each means)."""

    device: str
    quick: bool
    out: Path | None  # None: bench-<device>.json
    reference: str | None  # None: $SKELPIPE_REFERENCE_STGCN or ../shared/bench/reference_stgcn.py
    video: Path | None  # None: a synthetic clip
    checkpoint: str | None  # None: a random network with the fields of two people
    repeats: int | None  # None: 2, or 1 when quick


def plan(device: str, quick: bool) -> dict:
    """The shapes and sizes of each measurement on ``device`` (cuda or cpu)."""
    if device == "cuda":
        return {"train": {"batch": 64, "frames": 300, "steps": 10 if quick else 30},
                "demo": None,
                "extract": {"backbone": "shufflenetv2k16", "long_edge": 641, "frames": 150 if quick else 600,
                            "batch": 16},
                "memory": None}  # a GPU machine's host has the RAM: the memory target is a laptop's
    return {"train": {"batch": 16, "frames": 100, "steps": 3 if quick else 6},
            "demo": {"batch": 16, "frames": 16, "steps": 20 if quick else 40},
            "extract": {"backbone": "shufflenetv2k16", "long_edge": 321, "frames": 60 if quick else 150,
                        "batch": 4},
            "memory": {"steps": 1 if quick else 2, "batch": 16}}


def find_reference(path) -> Path | None:
    """The reference ST-GCN script: ``path``, ``$SKELPIPE_REFERENCE_STGCN``, or
    ``../shared/bench/reference_stgcn.py`` from the working directory."""
    for candidate in (path, os.environ.get(REFERENCE_ENV), "../shared/bench/reference_stgcn.py"):
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    if path:
        raise SkelpipeError(f"--reference {path}: no such file")
    return None


def machine(device) -> dict:
    """What the figures were measured on."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in (cpuinfo.read_text() if cpuinfo.exists() else "").splitlines()
             if line.startswith("model name")]
    cpu = names[0] if names else platform.processor()
    out = {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": round(physical_memory() / 1e9, 1),
           "python": platform.python_version(), "torch": torch.__version__,
           "cpu_native_bf16": native_bf16(torch.device("cpu")), "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 1e9, 1), cuda=torch.version.cuda)
        try:
            out["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out["driver"] = None
    return out


def child(args: list[str], timeout: float = 1800) -> dict:
    """Run one measurement in a child process: its JSON lines merged (plus ``wall_s``), or an error."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "MPLBACKEND": "Agg"})
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s: {' '.join(args)}"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
        return {"error": f"exit {proc.returncode}: {tail}"}
    merged = {}
    for line in lines:  # the reference's own line, then the wrapper's peak memory
        merged.update(json.loads(line))
    return {**merged, "wall_s": round(time.perf_counter() - t0, 1)}


def reference_args(reference: Path, device, batch, frames, steps, amp) -> list[str]:
    """The reference's own command line, wrapped to report its peak memory as well."""
    argv = [str(reference), "--device", device.type, "--batch", str(batch), "--frames", str(frames),
            "--steps", str(steps)] + (["--amp"] if amp else [])
    code = ("import json, resource, runpy, sys\n"
            f"sys.argv = {argv!r}\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "print(json.dumps({'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))\n")
    return [sys.executable, "-c", code]


def ours_args(command: str, *options) -> list[str]:
    return [sys.executable, "-m", "skelpipe", "bench", command, "--json", *map(str, options)]


def train_section(device, shapes, reference, repeats, channels=None) -> dict:
    """Training (and inference) throughput of the teacher and the student with and without PMSC,
    and of the reference at the same shapes, alternating; on CPU also skelpipe in fp32."""
    b, t, steps = shapes["batch"], shapes["frames"], shapes["steps"]
    amp = native_bf16(device)
    common = ["--device", device.type, "--batch-size", b, "--frames", t, "--steps", steps]
    common += ["--channels", channels] if channels else []
    runs = {"skelpipe": ours_args("train", *common, "--runs", "teacher,none,pmsc", "--amp" if amp else "--no-amp")}
    if amp and device.type == "cpu":  # the like-for-like figure: fp32, as the reference runs on a CPU
        runs["skelpipe fp32"] = ours_args("train", *common, "--runs", "teacher", "--no-amp")
    if reference and not channels:
        runs = {"reference": reference_args(reference, device, b, t, steps, amp=device.type == "cuda"), **runs}
    out = {"batch": b, "frames": t, "steps": steps, "persons": 2, "channels": channels or "ST-GCN's",
           "amp": amp, "results": {name: [] for name in runs}}
    for _ in range(repeats):
        for name, args in runs.items():
            r = child(args)
            console.print(f"  {name}: {_summary(r)}")
            out["results"][name].append(r)
    return out


def extract_section(device, shapes, video, checkpoint) -> dict:
    """Frames/s of ``skelpipe extract`` end to end, of the network alone and of
    ``python -m openpifpaf.video`` on the same clip, device and decoder settings."""
    try:
        import openpifpaf  # noqa: F401 - only to know whether the section can run
    except ImportError:
        return {"skipped": "OpenPifPaf is not installed (skelpipe install-openpifpaf)"}
    with tempfile.TemporaryDirectory(prefix="skelpipe-bench-") as tmp:
        clip = Path(video) if video else synthetic_clip(Path(tmp) / "clip.avi", shapes["frames"])
        args = ours_args("extract", "--backbone", shapes["backbone"], "--video", clip, "--device", device.type,
                         "--batch-size", shapes["batch"], "--long-edge", shapes["long_edge"],
                         "--max-frames", shapes["frames"],
                         *(["--checkpoint", checkpoint] if checkpoint else ["--weights", "people"]))
        r = child(args)
    console.print(f"  extract: {_summary(r)}")
    return {**shapes, "video": str(video) if video else "synthetic", "result": r,
            "weights": "checkpoint" if checkpoint else "people"}


def memory_section(device, shapes, stages) -> dict:
    """Peak host memory of training on an NTU-60-sized pack (larger than a quarter of the RAM)."""
    out = {}
    options = [f"--{k.replace('_', '-')}={v}" for k, v in shapes.items() if k in ("samples", "frames", "channels")]
    for stage in stages:
        r = child(ours_args("memory", "--device", device.type, "--stage", stage, "--steps", shapes["steps"],
                            "--batch-size", shapes["batch"], *options))
        console.print(f"  memory ({stage}): {_summary(r)}")
        out[stage] = r
    return out


def _summary(r: dict) -> str:
    if "error" in r:
        return f"[red]{r['error']}[/]"
    keys = ("train_samples_per_s", "infer_samples_per_s", "extract_fps", "openpifpaf_video_fps", "peak_rss_mb")
    return ", ".join(f"{k} {r[k]}" for k in keys if k in r)


def run_suite(s: Suite) -> tuple[dict, Path]:
    """Measure training, distillation, evaluation, extraction and memory, each beside its reference;
    write the report (figures, ratios, the machine, peak memory) and return it and where it went."""
    dev = resolve(s.device)
    shapes = plan(dev.type, s.quick)
    repeats = s.repeats or (1 if s.quick else 2)
    ref = find_reference(s.reference)
    out = s.out or Path(f"bench-{dev.type}.json")
    report = {"command": "skelpipe bench all --device " + dev.type + (" --quick" if s.quick else ""),
              "date": time.strftime("%Y-%m-%d"), "machine": machine(dev), "quick": s.quick, "repeats": repeats,
              "not_measured": {}}
    if ref is None:
        report["not_measured"]["training ratios"] = f"no reference script (--reference or ${REFERENCE_ENV})"
    t0 = time.perf_counter()
    console.print(f"[bold]training[/] {shapes['train']}")
    report["train"] = train_section(dev, shapes["train"], ref, repeats)
    if shapes["demo"]:
        console.print(f"[bold]the demo's shapes[/] {shapes['demo']}")
        report["demo"] = {"network": train_section(dev, shapes["demo"], None, repeats, channels=DEMO_CHANNELS)}
        if ref:  # ST-GCN at the demo's input shapes is measured for its ratio to the reference only
            report["demo"]["reference"] = train_section(dev, {**shapes["demo"], "steps": shapes["train"]["steps"]},
                                                        ref, repeats)
    console.print(f"[bold]extraction[/] {shapes['extract']}")
    report["extract"] = extract_section(dev, shapes["extract"], s.video, s.checkpoint)
    if "skipped" in report["extract"]:
        report["not_measured"]["extraction"] = report["extract"]["skipped"]
    if shapes["memory"]:
        console.print(f"[bold]memory[/] {shapes['memory']}")
        report["memory"] = memory_section(dev, shapes["memory"], ["teacher"] if s.quick else ["teacher", "student"])
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    report["figures"] = figures(report)  # the ratios and targets, as the table shows them
    atomic.write_json(out, report)
    return report, out
