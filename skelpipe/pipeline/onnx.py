"""A trained model as one ONNX file, and ONNX Runtime as predict's classifier.

``export`` writes the classifier (skeletons ``(N, C, T, V, M)`` → logits ``(N, K)``, batch and
frames dynamic) through ``torch.onnx``'s exporter, with everything ``skelpipe predict`` needs
stored in the file's metadata (``model.json`` and the pack's layout, normalisation and frame
sampling), so the file alone classifies a video: ``skelpipe predict clip.mp4 --model
student.onnx``. Needs the optional extra ``pip install 'skelpipe[onnx]'`` (onnx, onnxscript,
onnxruntime).
"""

import json
from pathlib import Path

import numpy as np
import torch

from skelpipe.core import atomic
from skelpipe.core.errors import SkelpipeError
from skelpipe.learn.checkpoint import load_model, with_model_section
from skelpipe.skeleton import layouts

META_KEY = "skelpipe"


class _Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)[0]


def export(model_dir, out, pack_attrs: dict, frames: int = 32) -> Path:
    """``model_dir`` (a training run) as ``out`` (.onnx); ``pack_attrs``: what predict needs of
    its pack. ``frames``: T of the example input (any T works at run time)."""
    onnx = _require("onnx")
    model, meta = load_model(model_dir, "cpu")
    net = meta["model"]
    x = torch.zeros(2, net["in_channels"], frames, layouts.get(net["layout"]).num_joints, net["num_persons"])
    batch, time_ = torch.export.Dim("batch", min=1), torch.export.Dim("frames", min=4)
    out = Path(out)
    with atomic.replacing(out) as tmp:
        torch.onnx.export(_Logits(model).eval(), (x,), str(tmp), input_names=["skeletons"],
                          output_names=["logits"], dynamic_shapes={"x": {0: batch, 2: time_}},
                          dynamo=True, verbose=False)
        proto = onnx.load(str(tmp))
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_KEY, json.dumps({"meta": meta, "pack": pack_attrs}, default=list)
        onnx.save(proto, str(tmp))
    return out


class OnnxModel:
    """An exported model run by ONNX Runtime on the CPU: ``meta`` (its ``model.json``),
    ``pack`` (its pack's attributes), ``probabilities(x)`` of one input (1, C, T, V, M)."""

    def __init__(self, path):
        ort = _require("onnxruntime")
        self.path = Path(path)
        if not self.path.is_file():
            raise SkelpipeError(f"{self.path}: no such ONNX model")
        try:
            self.session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - any unreadable file
            raise SkelpipeError(f"{self.path}: not an ONNX model ONNX Runtime can load ({str(e).splitlines()[0]})") from None
        stored = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
        if stored is None:
            raise SkelpipeError(f"{self.path}: not exported by skelpipe export onnx (no {META_KEY} metadata)")
        data = json.loads(stored)
        self.meta, self.pack = with_model_section(data["meta"], self.path), data["pack"]

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"skeletons": np.ascontiguousarray(x, dtype=np.float32)})[0]

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        return torch.softmax(torch.from_numpy(self.logits(x)[0]).double(), 0).numpy()


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise SkelpipeError(f"{module} is not installed: pip install 'skelpipe[onnx]'") from None
