"""Model files: a finished run's ``model.pt`` + ``model.json``, the part matrix E, atomic saves.

Evaluation, the part matrix, prediction and the student's teacher all load a model through
here, so none of them imports the training loop.
"""

import json
from pathlib import Path

import numpy as np
import torch

from skelpipe.core import atomic
from skelpipe.core.errors import SkelpipeError, reason
from skelpipe.core.fields import MAX_CLASSES, MAX_PEOPLE
from skelpipe.learn.config import TrainConfig
from skelpipe.learn.models import ModelConfig, build_model
from skelpipe.learn.models.config import CHOSEN_FIELDS, FIELDS


def save_model(out_dir, model, meta: dict):
    """``model.pt`` (state dict) then ``model.json``: the ``model`` section that rebuilds the network
    (``model.config``) and ``meta``; its presence marks completion."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # a distillation projection (kd_projection.*) served training only: the model is the network
    save_atomic({k: v.detach().cpu() for k, v in model.state_dict().items()
                 if not k.startswith("kd_projection.")}, out_dir / "model.pt")
    meta = {"model": model.config.to_dict(), **meta}
    atomic.write_text(out_dir / "model.json", json.dumps(meta, indent=2, default=list) + "\n")


def load_model(model_dir, device="cpu"):
    """(model in eval mode on ``device``, metadata) from a directory written by ``train``."""
    model_dir = Path(model_dir)
    meta_path, weights = model_dir / "model.json", model_dir / "model.pt"
    for path in (meta_path, weights):
        if not path.is_file():
            raise SkelpipeError(f"{path}: missing (not a finished training run)")
    meta = read_model_meta(meta_path)
    try:
        model = build_model(ModelConfig(**meta["model"]))
    except (SkelpipeError, ValueError, TypeError, KeyError, RuntimeError) as e:
        raise SkelpipeError(f"{meta_path}: describes no model that can be built ({reason(e)})") from None
    try:
        state = torch.load(weights, map_location=device, weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # an empty or truncated file, or weights of another architecture
        raise SkelpipeError(f"{weights}: cannot load the weights ({reason(e)})") from None
    if not all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()):
        raise SkelpipeError(f"{weights}: weights that are not finite (NaN or inf); retrain the model")
    return model.to(device).eval(), meta


def read_model_meta(meta_path: Path) -> dict:
    """``model.json``, its architecture checked against the settings' own bounds, so that a hand-edited
    file is one line, never a traceback or a network sized by a typo."""
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SkelpipeError(f"{meta_path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise SkelpipeError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    return with_model_section(meta, meta_path)


# Model fields that model.json files written before they existed lack.
OLDER_FILES_LACK = ("dropout", "part_pool")


def with_model_section(meta: dict, where) -> dict:
    """``meta`` (a ``model.json``'s contents, read from ``where``) with its ``model`` section
    checked against the settings' own bounds. A file that has the section's keys at its top level
    instead (as skelpipe wrote them before the section existed) gets the section made of them."""
    section = meta.get("model")
    if section is None and "backbone" in meta:
        older = {k: getattr(ModelConfig(), k) for k in OLDER_FILES_LACK}  # the defaults they were written with
        meta = {**meta, "model": {**older, **{k: meta[k] for k in FIELDS if k in meta}}}
        section = meta["model"]
    if not isinstance(section, dict):
        raise SkelpipeError(f"{where}: no model section (not written by skelpipe train)")
    missing, unknown = [k for k in FIELDS if k not in section], sorted(set(section) - set(FIELDS))
    if missing or unknown:
        raise SkelpipeError(f"{where}: the model section " + "; ".join(
            f"{what} {', '.join(keys)}" for what, keys in (("lacks", missing), ("has unknown", unknown)) if keys))
    try:
        TrainConfig(**{k: section[k] for k in CHOSEN_FIELDS})
    except SkelpipeError as e:
        raise SkelpipeError(f"{where}: {str(e).removeprefix('training config: ')}") from None
    for key, high in (("num_classes", MAX_CLASSES), ("num_persons", MAX_PEOPLE), ("in_channels", 16)):
        value = section[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise SkelpipeError(f"{where}: {key} must be an integer in [1, {high}], got {value!r}")
    return meta


def init_from_teacher(model, teacher_dir) -> dict:
    """Copy into ``model`` every tensor of the teacher in ``teacher_dir`` whose name and shape
    match (``init = "teacher"``; docs/method.md, §Student initialisation): the blocks and the
    classifier when the two networks have the same channels; the input batch norm and the edge
    weights differ when the joint sets do, and keep their random start. Returns what was done:
    the teacher's key and the names copied and kept."""
    if teacher_dir is None:
        raise SkelpipeError("init = teacher needs a trained teacher (--teacher)")
    teacher, meta = load_model(teacher_dir, "cpu")
    theirs = teacher.state_dict()
    ours = model.state_dict()
    copied = [k for k, v in ours.items() if k in theirs and theirs[k].shape == v.shape]
    if not any(k.endswith("weight") for k in copied):
        raise SkelpipeError(f"{teacher_dir}: no weight of the teacher matches the student in name and "
                            "shape (other backbone or channels?); init = teacher has nothing to copy")
    with torch.no_grad():
        for k in copied:
            ours[k].copy_(theirs[k].to(ours[k].device))
    return {"teacher": meta["config_key"], "copied": len(copied),
            "kept": sorted(k for k in ours if k not in copied)}


def load_part_matrix(path) -> torch.Tensor:
    """The action-specific part matrix E (num_classes, 5) from a .npy, .pt or .json file, or
    the ``part_matrix.npy`` of a ``skelpipe partmatrix`` directory."""
    path = Path(path)
    if path.is_dir():
        path = path / "part_matrix.npy"
    if not path.is_file():
        raise SkelpipeError(f"{path}: part matrix file not found")
    try:
        if path.suffix == ".npy":
            e = torch.from_numpy(np.load(path))
        elif path.suffix == ".json":
            data = json.loads(path.read_text())
            e = torch.tensor(data["E"] if isinstance(data, dict) else data)
        else:
            e = torch.load(path, map_location="cpu", weights_only=True)
            e = e["E"] if isinstance(e, dict) else e
    except Exception as err:
        raise SkelpipeError(f"{path}: cannot read the part matrix ({reason(err)})") from None
    e = torch.as_tensor(e, dtype=torch.float32)
    if e.dim() != 2 or e.shape[1] != 5:
        raise SkelpipeError(f"{path}: a part matrix has shape (classes, 5), got {tuple(e.shape)}")
    if not torch.isfinite(e).all():
        raise SkelpipeError(f"{path}: the part matrix holds {int((~torch.isfinite(e)).sum())} value(s) "
                            "that are not finite (NaN or inf)")
    return e


def save_atomic(obj, path: Path):
    """``torch.save`` that a kill at any moment leaves either the old file or the new one."""
    with atomic.replacing(path) as tmp:
        torch.save(obj, tmp)
