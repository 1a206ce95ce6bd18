"""Training: teacher and students overfit a tiny synthetic set, cached teacher features equal
on-the-fly ones, exact resume after SIGKILL, checkpoints load with weights_only=True."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY, make_split, write_pack

from skelpipe.core.errors import SkelpipeError
from skelpipe.data import split as split_module
from skelpipe.data.split import DiskRows, load_split
from skelpipe.learn.checkpoint import load_model
from skelpipe.learn.config import TrainConfig, settings
from skelpipe.learn.evaluate import Occlusion, predict
from skelpipe.learn.models import ModelConfig, build_model
from skelpipe.learn.train import train as train_pack
from skelpipe.learn.train import train_split as train
from skelpipe.skeleton import layouts
from skelpipe.skeleton.noise import instance_seeds, sample_keys

ROOT = Path(__file__).resolve().parents[1]


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


# Tiny nets need a few hundred steps before BatchNorm's running statistics (initialised to 1)
# match the small activations of the reference initialisation: 48 instances, batch 8.
OVERFIT = dict(epochs=20, batch_size=8, lr=0.05, milestones=(14,), **TINY)


@pytest.fixture(scope="module")
def trained_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "run"
    train(TrainConfig(stage="teacher", **OVERFIT), make_split(paired_fraction=2 / 3), out)
    return out


def test_teacher_overfits_and_writes_a_loadable_model(trained_teacher):
    m = metrics(trained_teacher)
    assert [r["epoch"] for r in m] == list(range(1, 21))
    assert m[-1]["train_acc"] == 1.0 and m[-1]["loss"] < 0.3 * m[0]["loss"]
    assert m[0]["lr"] == pytest.approx(0.05) and m[-1]["lr"] == pytest.approx(0.005)
    meta = json.loads((trained_teacher / "model.json").read_text())
    assert meta["model"]["layout"] == "ntu25" and meta["model"]["num_classes"] == 3 and meta["stage"] == "teacher"
    assert meta["class_names"] == ["class0", "class1", "class2"] and meta["model"]["channels"] == [8, 8, 16, 16]
    model, meta2 = load_model(trained_teacher, "cpu")
    assert meta2 == meta and not model.training
    split = make_split(paired_fraction=2 / 3)        # the teacher trained on D_pair's HQ only
    pred = predict(model, split.hq[split.has_hq]).argmax(1).numpy()
    assert (pred == split.label[split.has_hq]).all()


@pytest.mark.parametrize("kd", ["none", "kl", "global-msc", "pmsc"])
def test_student_overfits_with_each_distillation(kd, trained_teacher, tmp_path):
    split = make_split(paired_fraction=2 / 3)
    cfg = TrainConfig(stage="student", kd=kd, op=0.1, hq_topup=2, **OVERFIT)
    part = torch.softmax(torch.rand(3, 5), dim=1)
    train(cfg, split, tmp_path / "s", teacher_dir=trained_teacher, part_matrix=part)
    m = metrics(tmp_path / "s")
    assert m[-1]["ce"] < 0.3 * m[0]["ce"]
    for r in m:
        assert r["loss"] == pytest.approx(r["ce"] + cfg.alpha * r["kd"], rel=1e-5)
        assert (r["kd"] == 0.0) == (kd == "none") and np.isfinite(r["kd"])
    if kd in ("global-msc", "pmsc"):  # the contrastive term falls as the student aligns with the teacher
        assert m[-1]["kd"] < m[0]["kd"]
    model, meta = load_model(tmp_path / "s")
    assert meta["model"]["layout"] == "coco17"
    # every training instance (D_pair and D_sol), occluded as in training, is classified right
    seeds = instance_seeds(cfg.occlusion_seed, sample_keys(split.ids), "train", "train")
    pred = predict(model, split.lq, occlusion=Occlusion(cfg.op, seeds)).argmax(1).numpy()
    assert (pred == split.label).all()


@pytest.mark.parametrize("kd", ["kl", "global-msc", "pmsc"])
def test_cached_and_online_teacher_features_give_equal_losses(kd, tmp_path, random_teacher):
    split = make_split(paired_fraction=0.5)
    part = torch.softmax(torch.rand(3, 5), dim=1)
    weights = {}
    for mode in ("cached", "online"):
        cfg = TrainConfig(stage="student", kd=kd, epochs=1, batch_size=6, lr=0.05, op=0.2, hq_topup=2,
                          teacher_features=mode, **TINY)
        train(cfg, split, tmp_path / mode, teacher_dir=random_teacher, part_matrix=part)
        weights[mode] = torch.load(tmp_path / mode / "model.pt", weights_only=True)
    (cached,), (online,) = metrics(tmp_path / "cached"), metrics(tmp_path / "online")
    assert cached["kd"] > 0
    assert cached["kd"] == pytest.approx(online["kd"], rel=1e-5)
    assert cached["loss"] == pytest.approx(online["loss"], rel=1e-5)
    # same updates, up to float rounding (the teacher's convolutions see other batch sizes)
    for name, w in weights["cached"].items():
        torch.testing.assert_close(w, weights["online"][name], rtol=1e-4, atol=1e-5)
    # the same config key: teacher_features is a runtime setting
    keys = {json.loads((tmp_path / m / "model.json").read_text())["config_key"] for m in ("cached", "online")}
    assert len(keys) == 1


def test_cached_teacher_outputs_equal_a_direct_forward(random_teacher):
    from skelpipe.learn.distill import teacher_outputs
    teacher, _ = load_model(random_teacher)
    split = make_split(paired_fraction=0.5)
    x, pool = torch.from_numpy(split.hq), np.flatnonzero(split.has_hq)
    cached = teacher_outputs(teacher, x, pool, 5, torch.device("cpu"), amp=False)
    batch = torch.from_numpy(pool[[7, 2, 11]])
    with torch.no_grad():
        direct = teacher(x[batch])
    for c, d in zip(cached, direct):
        torch.testing.assert_close(c[batch], d, rtol=1e-5, atol=1e-7)
    solitary = np.flatnonzero(~split.has_hq)
    assert all((c[solitary] == 0).all() for c in cached)


RESUME_SCRIPT = textwrap.dedent("""
    import os, signal, sys, torch
    from skelpipe.bench.inputs import random_split
    from skelpipe.learn.config import TrainConfig
    from skelpipe.learn.train import train_split
    out, teacher, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(1)
    if kill_at:                       # die by SIGKILL inside optimizer step number kill_at
        step = torch.optim.SGD.step
        calls = [0]
        def killing_step(self, *a, **k):
            calls[0] += 1
            if calls[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return step(self, *a, **k)
        torch.optim.SGD.step = killing_step
    split = random_split(20, "ntu25", frames=12, num_classes=3, seed=1)
    split.has_hq[::3] = False
    cfg = TrainConfig(stage="student", kd="pmsc", epochs=4, batch_size=6, lr=0.05, milestones=(2,),
                      op=0.3, occlusion_draws="fresh", hq_topup=2, dropout=0.2,
                      channels=(8, 8, 16, 16), temporal_kernel=3, device="cpu")
    train_split(cfg, split, out, teacher_dir=teacher, part_matrix=torch.full((3, 5), 0.2))
""")


def _run_resume_script(tmp_path, out, teacher, kill_at):
    script = tmp_path / "resume_run.py"
    script.write_text(RESUME_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(script), str(out), str(teacher), str(kill_at)],
                          env=env, capture_output=True, text=True, timeout=120)


def test_exact_resume_after_sigkill_in_the_middle_of_an_epoch(tmp_path, random_teacher):
    # 20 instances, batch 6: 4 steps an epoch; step 11 is the 3rd step of epoch 3
    killed = _run_resume_script(tmp_path, tmp_path / "killed", random_teacher, kill_at=11)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    ckpt = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and not (tmp_path / "killed" / "model.pt").exists()
    resumed = _run_resume_script(tmp_path, tmp_path / "killed", random_teacher, kill_at=0)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    straight = _run_resume_script(tmp_path, tmp_path / "straight", random_teacher, kill_at=0)
    assert straight.returncode == 0, straight.stderr
    a = torch.load(tmp_path / "killed" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    ma, mb = metrics(tmp_path / "killed"), metrics(tmp_path / "straight")
    assert [(r["loss"], r["train_acc"]) for r in ma] == [(r["loss"], r["train_acc"]) for r in mb]


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path):
    split = make_split()
    cfg = TrainConfig(stage="teacher", epochs=1, batch_size=6, **TINY)
    train(cfg, split, tmp_path / "run")
    (tmp_path / "run" / "model.json").unlink()   # unfinished again, with last.pt of 1 epoch
    other = TrainConfig(stage="teacher", epochs=1, batch_size=6, lr=0.01, **TINY)
    with pytest.raises(SkelpipeError, match="another configuration"):
        train(other, split, tmp_path / "run")


def test_config_errors_are_one_line_skelpipe_errors(tmp_path, random_teacher):
    with pytest.raises(SkelpipeError, match="without --kd"):
        TrainConfig(stage="teacher", kd="pmsc")
    with pytest.raises(SkelpipeError, match="unknown setting"):
        TrainConfig.from_dict({"stage": "student", "learning_rate": 0.1})
    cfg = TrainConfig(stage="student", kd="pmsc", epochs=1, batch_size=6, **TINY)
    with pytest.raises(SkelpipeError, match="needs --teacher"):
        train(cfg, make_split(), tmp_path / "s")
    with pytest.raises(SkelpipeError, match="needs --part-matrix"):
        train(cfg, make_split(), tmp_path / "s", teacher_dir=random_teacher)
    with pytest.raises(SkelpipeError, match="model.json: missing"):
        load_model(tmp_path / "nothing")


@pytest.mark.parametrize("features", ["cached", "online"])
def test_training_from_disk_gives_the_weights_of_training_in_memory(tmp_path, monkeypatch, features,
                                                                    random_teacher):
    write_pack(tmp_path / "pack", make_split(paired_fraction=0.75), make_split(seed=1))
    cfg = TrainConfig(stage="student", kd="pmsc", op=0.3, epochs=2, batch_size=6, lr=0.05,
                      teacher_features=features, **TINY)
    e = torch.full((3, 5), 0.2)
    for rows in ("memory", "disk"):
        train(cfg, load_split(tmp_path / "pack", "train", rows=rows), tmp_path / rows,
              teacher_dir=random_teacher, part_matrix=e)
    # train() reads a split from disk when it exceeds a share of the RAM
    monkeypatch.setattr(split_module, "MEMORY_SHARE", 0.0)
    assert isinstance(load_split(tmp_path / "pack", "train", rows="auto").lq, DiskRows)
    np.save(tmp_path / "E.npy", e.numpy())
    train_pack(cfg, tmp_path / "pack", tmp_path / "auto", teacher_dir=random_teacher,
               part_matrix=tmp_path / "E.npy")
    weights = [load_model(tmp_path / d)[0].state_dict() for d in ("memory", "disk", "auto")]
    for name, w in weights[0].items():
        assert torch.equal(w, weights[1][name]) and torch.equal(w, weights[2][name]), name


def test_max_steps_cuts_every_epoch_and_keys_only_when_set(tmp_path):
    cfg = TrainConfig(stage="teacher", epochs=2, batch_size=6, max_steps=3, **TINY)
    train(cfg, make_split(), tmp_path / "t")
    m = metrics(tmp_path / "t")
    assert [r["samples"] for r in m] == [18, 18] and all("steady_samples_per_s" in r for r in m)
    assert "max_steps" not in settings(TrainConfig().to_dict())
    assert settings(cfg.to_dict())["max_steps"] == 3
    assert TrainConfig(max_steps=3).key() != TrainConfig().key()


def test_a_negative_max_steps_is_refused():
    with pytest.raises(SkelpipeError, match="max_steps"):
        TrainConfig(max_steps=-1)


def test_train_command_on_a_pack_directory(tmp_path):
    from skelpipe.commands.train import train_command
    write_pack(tmp_path / "pack", make_split(), make_split(seed=1))
    args = ["--stage", "teacher", "--pack", str(tmp_path / "pack"), "--out", str(tmp_path / "t"),
            "--channels", "8,8,16,16", "--temporal-kernel", "3", "--epochs", "3", "--batch-size", "6",
            "--lr", "0.05", "--milestones", "2", "--device", "cpu", "--eval-every", "1"]
    result = CliRunner().invoke(train_command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    m = metrics(tmp_path / "t")
    assert len(m) == 3 and all(0 <= r["test_top1"] <= r["test_top5"] == 1.0 for r in m)  # 3 classes
    meta = json.loads((tmp_path / "t" / "model.json").read_text())
    assert meta["config"]["milestones"] == [2] and meta["data"]["key"]
    # rerunning a finished run does nothing
    before = (tmp_path / "t" / "model.pt").stat().st_mtime_ns
    assert CliRunner().invoke(train_command, args).exit_code == 0
    assert (tmp_path / "t" / "model.pt").stat().st_mtime_ns == before
    # a pmsc student with that teacher and a part matrix directory (as skelpipe partmatrix writes)
    (tmp_path / "E").mkdir()
    np.save(tmp_path / "E" / "part_matrix.npy", np.full((3, 5), 0.2, np.float32))
    student = ["--stage", "student", "--kd", "pmsc", "--op", "0.2", "--teacher", str(tmp_path / "t"),
               "--part-matrix", str(tmp_path / "E"), "--out", str(tmp_path / "s")] + args[2:4] + args[6:]
    result = CliRunner().invoke(train_command, student, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "s" / "model.json").read_text())
    assert meta["kd"] == "pmsc" and meta["teacher_key"] == json.loads((tmp_path / "t" / "model.json").read_text())["config_key"]
    assert all(r["kd"] > 0 for r in metrics(tmp_path / "s"))


def test_epoch_order_is_seeded_by_epoch_and_dealt_into_disjoint_shards():
    from skelpipe.learn.batches import epoch_order
    a, b = epoch_order(10, 0, 3, 0, 1), epoch_order(10, 0, 3, 0, 1)
    assert (a == b).all() and sorted(a) == list(range(10))
    assert not (a == epoch_order(10, 0, 4, 0, 1)).all()
    shards = [epoch_order(10, 0, 3, r, 3) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]                # padded to a multiple of 3
    assert set(np.concatenate(shards)) == set(range(10))
    counts = np.bincount(np.concatenate(shards), minlength=10)
    assert counts.sum() == 12 and counts.min() == 1 and counts.max() == 2   # 2 instances repeated


def test_hq_batch_maps_each_paired_instance_to_its_counterpart():
    from skelpipe.learn.batches import hq_batch
    has_hq = np.array([True, False, True, True, False, True, True])
    idx = np.array([4, 0, 1, 3])
    hq, pair = hq_batch(idx, has_hq, np.flatnonzero(has_hq), 0, np.random.default_rng(0))
    assert hq.tolist() == [0, 3] and pair.tolist() == [-1, 0, -1, 1]
    hq, pair = hq_batch(idx, has_hq, np.flatnonzero(has_hq), 2, np.random.default_rng(0))
    assert hq[:2].tolist() == [0, 3] and pair.tolist() == [-1, 0, -1, 1]
    assert len(hq) == 4 and set(hq[2:]) <= {2, 5, 6}            # top-up: D_pair, not in the batch


def test_a_finished_run_of_another_configuration_is_refused(tmp_path):
    split = make_split()
    train(TrainConfig(stage="teacher", epochs=1, batch_size=6, **TINY), split, tmp_path / "run")
    # a runtime setting (device, eval cadence, ...) does not matter: the run is simply done
    train(TrainConfig(stage="teacher", epochs=1, batch_size=6, eval_every=1, **TINY), split, tmp_path / "run")
    with pytest.raises(SkelpipeError, match="finished run of another configuration"):
        train(TrainConfig(stage="teacher", epochs=2, batch_size=6, **TINY), split, tmp_path / "run")


def test_part_dropout_mask_zeroes_one_whole_part():
    from skelpipe.learn.partmatrix import part_keep_masks
    from skelpipe.learn.batches import part_dropout_mask

    keep = part_keep_masks(layouts.get("ntu25"))
    torch.manual_seed(0)
    mask = part_dropout_mask(keep, 4000, 0.3, "cpu")
    assert mask.shape == (4000, 1, 1, 25, 1)
    rows = mask[:, 0, 0, :, 0]
    dropped = (rows == 0).any(1)
    assert abs(dropped.float().mean().item() - 0.3) < 0.03
    # every dropped row is exactly one part's keep-row
    for row in rows[dropped][:200]:
        assert any(torch.equal(row, k) for k in keep)
    assert torch.all(part_dropout_mask(keep, 10, 0.0, "cpu") == 1)


def test_teacher_with_part_dropout_trains_and_records_it(tmp_path):
    cfg = TrainConfig(stage="teacher", channels=(8, 16), epochs=2, batch_size=16, milestones=(),
                      part_dropout=0.5, device="cpu")
    train(cfg, make_split(), tmp_path / "t")
    _, meta = load_model(tmp_path / "t")
    assert meta["config"]["part_dropout"] == 0.5 and meta["model"]["part_pool"] == "mean"


def test_a_part_dropout_above_1_is_refused():
    with pytest.raises(SkelpipeError, match="part_dropout"):
        TrainConfig(part_dropout=1.5)


def test_alpha_warmup_and_gradient_norms_are_recorded(trained_teacher, tmp_path):
    part = torch.softmax(torch.rand(3, 5), dim=1)
    cfg = TrainConfig(stage="student", kd="pmsc", channels=(8, 16), epochs=4, batch_size=16, milestones=(),
                      alpha=2.0, alpha_warmup=4, device="cpu")
    train(cfg, make_split(paired_fraction=2 / 3), tmp_path / "s", teacher_dir=trained_teacher, part_matrix=part)
    m = metrics(tmp_path / "s")
    assert [r["alpha"] for r in m] == [0.5, 1.0, 1.5, 2.0]
    for r in m:
        assert r["loss"] == pytest.approx(r["ce"] + r["alpha"] * r["kd"], rel=1e-5)
        assert r["grad_ce"] > 0 and r["grad_kd"] > 0
    assert "grad_kd" not in metrics(trained_teacher)[0]


def test_a_single_class_is_refused(tmp_path):
    split = make_split()
    split.label[:] = 1
    with pytest.raises(SkelpipeError, match="at least 2 classes"):
        train(TrainConfig(stage="teacher", channels=(8,), epochs=1, device="cpu"), split, tmp_path / "t")
    assert not (tmp_path / "t" / "model.json").exists()


def test_tensorboard_event_files_when_the_extra_is_installed(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = TrainConfig(stage="teacher", epochs=2, batch_size=6, **TINY)
    train(cfg, make_split(), tmp_path / "with")
    events = EventAccumulator(str(tmp_path / "with" / "tensorboard"))
    events.Reload()
    assert {"teacher/loss", "teacher/ce", "teacher/lr", "teacher/samples_per_s"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("teacher/loss")] == [1, 2]
    assert [round(e.value, 5) for e in events.Scalars("teacher/loss")] == [round(r["loss"], 5) for r in metrics(tmp_path / "with")]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # the extra not installed
    train(cfg, make_split(), tmp_path / "without")
    assert not (tmp_path / "without" / "tensorboard").exists()
    a = torch.load(tmp_path / "with" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "without" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)  # training is the same either way


def test_teacher_init_copies_every_tensor_whose_name_and_shape_match(trained_teacher, tmp_path):
    from skelpipe.learn.checkpoint import init_from_teacher
    teacher, _ = load_model(trained_teacher)
    student = build_model(ModelConfig("stgcn", "coco17", 3, 3, TINY["channels"], TINY["temporal_kernel"]))
    done = init_from_teacher(student, trained_teacher)
    theirs, ours = teacher.state_dict(), student.state_dict()
    copied = [k for k in ours if k not in done["kept"]]
    assert done["copied"] == len(copied) and len(copied) > len(done["kept"])
    for k in copied:
        assert torch.equal(ours[k], theirs[k])
    # ntu25 → coco17: the input batch norm and the edge weights are of other joint sets: kept
    assert any(k.startswith("data_bn") for k in done["kept"])
    assert all(k in theirs and theirs[k].shape != ours[k].shape for k in done["kept"])

    split = make_split()
    cfg = dict(stage="student", epochs=1, batch_size=8, **TINY)
    train(TrainConfig(**cfg, init="teacher"), split, tmp_path / "t", teacher_dir=trained_teacher)
    train(TrainConfig(**cfg), split, tmp_path / "r")
    meta_t = json.loads((tmp_path / "t" / "model.json").read_text())
    meta_r = json.loads((tmp_path / "r" / "model.json").read_text())
    assert meta_t["init_from"]["copied"] == done["copied"] and "init_from" not in meta_r
    assert meta_t["config_key"] != meta_r["config_key"]
    assert "init" not in settings(TrainConfig(**cfg).to_dict())          # old keys unchanged


def test_teacher_init_needs_a_teacher_and_is_for_students_only(tmp_path):
    cfg = dict(stage="student", epochs=1, batch_size=8, **TINY)
    with pytest.raises(SkelpipeError, match="needs a trained teacher"):
        train(TrainConfig(**cfg, init="teacher"), make_split(), tmp_path / "x")
    with pytest.raises(SkelpipeError, match="teacher starts from random"):
        TrainConfig(stage="teacher", init="teacher")


def test_a_part_projection_starts_as_the_identity():
    from skelpipe.learn.distill import PartProjection
    proj = PartProjection(4, 4)
    parts = torch.rand(3, 5, 4)
    assert torch.equal(proj(parts), parts)                      # identity start: the paper's loss
    assert PartProjection(4, 6)(parts).shape == (3, 5, 6)


def test_a_linear_projection_per_part_trains_with_pmsc_and_stays_out_of_the_model(trained_teacher, tmp_path):
    split = make_split(paired_fraction=2 / 3)
    cfg = TrainConfig(stage="student", kd="pmsc", projection="linear", epochs=2, batch_size=8, **TINY)
    train(cfg, split, tmp_path / "p", teacher_dir=trained_teacher, part_matrix=torch.full((3, 5), 0.2))
    last = torch.load(tmp_path / "p" / "last.pt", weights_only=True)["model"]
    w = last["kd_projection.weight"]
    assert w.shape == (5, 16, 16) and not torch.equal(w, torch.eye(16).repeat(5, 1, 1))   # it learned
    load_model(tmp_path / "p")                                   # model.pt is the plain network
    assert "projection" not in settings(TrainConfig(stage="student", kd="pmsc").to_dict())


def test_a_projection_other_than_none_or_linear_is_refused():
    with pytest.raises(SkelpipeError, match="projection must be none or linear"):
        TrainConfig(stage="student", kd="pmsc", projection="mlp")


def test_lr_warmup_ramps_linearly_then_steps_at_the_milestones_and_resumes():
    from skelpipe.learn.train import TrainState

    def lrs(cfg, state, epochs):
        out = []
        for _ in range(epochs):
            out.append(state.optimizer.param_groups[0]["lr"])
            state.scheduler.step()
        return out

    cfg = TrainConfig(lr=0.3, lr_warmup=3, milestones=(5, 7), gamma=0.1)
    got = lrs(cfg, TrainState.of(cfg, torch.nn.Linear(2, 2)), 8)
    assert np.allclose(got, [0.1, 0.2, 0.3, 0.3, 0.3, 0.03, 0.03, 0.003])
    # the schedule resumes from its state: epochs 4.. equal an uninterrupted run's
    first = TrainState.of(cfg, torch.nn.Linear(2, 2))
    lrs(cfg, first, 4)
    again = TrainState.of(cfg, torch.nn.Linear(2, 2))
    again.optimizer.load_state_dict(first.optimizer.state_dict())
    again.scheduler.load_state_dict(first.scheduler.state_dict())
    assert np.allclose(lrs(cfg, again, 4), got[4:])
    # without warm-up: the milestones alone, and the setting stays out of the config key
    plain = TrainConfig(lr=0.3, milestones=(2,), gamma=0.1)
    assert isinstance(TrainState.of(plain, torch.nn.Linear(2, 2)).scheduler, torch.optim.lr_scheduler.MultiStepLR)
    assert "lr_warmup" not in settings(plain.to_dict()) and settings(cfg.to_dict())["lr_warmup"] == 3
