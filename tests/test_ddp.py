"""DDP: the training command under ``torch.distributed.run --nproc-per-node 2`` on the CPU (gloo)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

DDP_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    import skelpipe.learn.train as T
    from skelpipe.bench.inputs import random_split
    out, teacher, weights_dir = sys.argv[1:4]
    torch.set_num_threads(1)
    seen = {}
    class SpyDDP(T.DDP):              # keep each rank's model to compare the ranks afterwards
        def __init__(self, module, *a, **k):
            super().__init__(module, *a, **k)
            seen["model"] = module
    T.DDP = SpyDDP
    split = random_split(22, "ntu25", frames=12, num_classes=3, seed=2)
    split.has_hq[::4] = False
    cfg = T.TrainConfig(stage="student", kd="pmsc", epochs=2, batch_size=8, lr=0.05, op=0.2,
                        hq_topup=1, channels=(8, 8, 16, 16), temporal_kernel=3, device="cpu")
    T.train_split(cfg, split, out, teacher_dir=teacher, part_matrix=torch.full((3, 5), 0.2))
    rank = os.environ["RANK"]
    torch.save({"world": int(os.environ["WORLD_SIZE"]), "state": seen["model"].state_dict()},
               os.path.join(weights_dir, f"rank{rank}.pt"))
""")


def test_two_cpu_processes_end_with_identical_weights(tmp_path, random_teacher):
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc-per-node", "2", str(script), str(tmp_path / "run"), str(random_teacher),
                          str(tmp_path)], env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["world"] == r1["world"] == 2
    written = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    for name, value in r0["state"].items():
        assert torch.equal(value, r1["state"][name]), name      # parameters and BN statistics
        assert torch.equal(value, written[name]), name
    # rank 0 alone wrote the run: one metrics line per epoch, counting both ranks' samples
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert len(ckpt["rng"]) == 2                                # every rank's RNG states
