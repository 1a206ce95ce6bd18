"""The OpenPifPaf network: checkpoints by name (downloaded the normal way, or offline from a local
file), the model on a device, and ``Runner``, which keeps it busy on batches of frames.

Checkpoints are pickled whole models (OpenPifPaf's format). A pickle can run code, so they are
loaded with torch's ``weights_only`` unpickler and an allow-list of what an OpenPifPaf network is
built of (``safe_globals``): a file that names anything else is refused before any of it runs.
"""

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from skelpipe.core.device import native_bf16
from skelpipe.core.errors import SkelpipeError
from skelpipe.pose.fields import PeopleFields

try:  # numpy 2 names its pickle helpers numpy._core.*, numpy 1 numpy.core.*
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # pragma: no cover - numpy 1
    from numpy.core.multiarray import _reconstruct, scalar

#: The paper's backbone names → OpenPifPaf's.
ALIASES = {"shufflenetv2x1": "shufflenetv2k16", "mobilenetv3small": "mobilenetv3small", "resnet152": "resnet152"}
OFFLINE_ENV = "SKELPIPE_OFFLINE"  # set to 1: never try to download a checkpoint
#: the opening lines of torch's weights_only refusals, which say nothing about the file
TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resolve_backbone(name: str) -> str:
    """Lower-case OpenPifPaf base-network / checkpoint name for ``name`` (aliases resolved)."""
    key = name.strip().lower()
    return ALIASES.get(key, key)


def _openpifpaf():
    try:
        import openpifpaf
    except ImportError as e:
        raise SkelpipeError(f"OpenPifPaf is not importable ({e}): run `skelpipe install-openpifpaf`") from e
    return openpifpaf


def checkpoint_file(backbone: str) -> tuple[str, Path]:
    """(download URL, path in the torch hub cache) of OpenPifPaf's named checkpoint ``backbone``."""

    op = _openpifpaf()
    url = op.CHECKPOINT_URLS.get(backbone)
    if url is None:
        named = sorted(k for k, v in op.CHECKPOINT_URLS.items() if isinstance(v, str) and "-" not in k)
        raise SkelpipeError(f"--backbone {backbone}: OpenPifPaf has no checkpoint of that name (named: "
                            f"{', '.join(named)}); for another base network pass --checkpoint PATH")
    if url is op.PRETRAINED_UNAVAILABLE:
        raise SkelpipeError(f"--backbone {backbone}: OpenPifPaf 0.13 has no pretrained {backbone} checkpoint; "
                            f"train one and pass --checkpoint PATH")
    return url, Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def safe_globals() -> list:
    """The classes and functions an OpenPifPaf checkpoint may name, for ``torch.load(weights_only=True)``:
    OpenPifPaf's networks and head metas, the torch and torchvision modules they are built of, the
    numpy arrays the head metas hold (under numpy 1's names too), and ``PeopleFields`` (a hook that
    benchmark checkpoints carry). Constructing any of them runs nothing but the module's own setup."""
    import torchvision.models.mobilenetv2
    import torchvision.models.mobilenetv3
    import torchvision.models.resnet
    import torchvision.models.shufflenetv2
    import torchvision.ops.misc
    from openpifpaf import headmeta
    from openpifpaf.network import basenetworks, heads, nets, running_cache, tracking_base, tracking_heads

    def defined(module):
        return [v for v in vars(module).values() if isinstance(v, type) and v.__module__ == module.__name__]

    openpifpaf = [c for m in (headmeta, basenetworks, heads, nets, running_cache, tracking_base, tracking_heads)
                  for c in defined(m)]
    blocks = [c for m in (torchvision.models.mobilenetv2, torchvision.models.mobilenetv3, torchvision.models.resnet,
                          torchvision.models.shufflenetv2, torchvision.ops.misc)
              for c in defined(m) if issubclass(c, torch.nn.Module)]
    torch_nn = [c for c in vars(torch.nn).values() if isinstance(c, type) and issubclass(c, torch.nn.Module)]
    numpy = [_reconstruct, scalar, np.ndarray, np.dtype,
             (_reconstruct, "numpy.core.multiarray._reconstruct"), (scalar, "numpy.core.multiarray.scalar")]
    numpy += [c for c in vars(np.dtypes).values() if isinstance(c, type) and issubclass(c, np.dtype)]  # built
    return openpifpaf + blocks + torch_nn + numpy + [PeopleFields]


def load_checkpoint_file(path: Path):
    """An OpenPifPaf checkpoint file, unpickled under the allow-list; a refusal in one line."""
    try:
        with torch.serialization.safe_globals(safe_globals()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's note on the pickle protocol of files it then refuses
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        refused = re.search(r"GLOBAL ([\w.]+)", str(e))
        details = [line for line in str(e).splitlines() if line.strip() and not line.startswith(TORCH_BOILERPLATE)]
        why = (f"it names {refused.group(1)}, which an OpenPifPaf network never needs: refused unrun, as a pickle "
               f"can run code" if refused else f"{type(e).__name__}: {details[0]}" if details else type(e).__name__)
        raise SkelpipeError(f"{path}: not a loadable OpenPifPaf checkpoint ({why})") from e


def _load_checkpoint(backbone: str, checkpoint: str | None):
    """The checkpoint dict (or model) and a label for it: a local file, or a named one (cached/downloaded)."""

    if checkpoint:
        path = Path(checkpoint)
        if not path.is_file():
            raise SkelpipeError(f"{path}: checkpoint file not found")
        return load_checkpoint_file(path), str(path)
    url, path = checkpoint_file(backbone)
    label = f"{backbone} ({path.name})"
    if path.is_file():
        return load_checkpoint_file(path), label
    fix = (f"download {url} to {path} (mkdir -p {path.parent} && curl -L -o {path} {url}), "
           f"or pass --checkpoint PATH to a local OpenPifPaf checkpoint")
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise SkelpipeError(f"checkpoint {path.name} for --backbone {backbone} is not in {path.parent} and "
                            f"{OFFLINE_ENV} forbids downloading it: {fix}")
    try:  # where OpenPifPaf's own way (torch.hub.load_state_dict_from_url) puts it; written atomically
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), progress=False)
    except Exception as e:  # noqa: BLE001 - offline, proxy, HTTP error ...
        raise SkelpipeError(f"checkpoint {path.name} for --backbone {backbone} is not in {path.parent} and could "
                            f"not be downloaded ({type(e).__name__}: {e}): {fix}") from e
    return load_checkpoint_file(path), label


@dataclass
class Network:
    model: object
    cif_meta: object
    caf_meta: object
    backbone: str
    checkpoint: str

    @property
    def source(self) -> str:
        """What the pose stores record as their source."""
        return f"openpifpaf:{self.backbone}"


def load_network(backbone: str, checkpoint: str | None = None) -> Network:
    """OpenPifPaf network for ``backbone`` (or from ``checkpoint``), in eval mode on the CPU."""
    _openpifpaf()
    from openpifpaf import headmeta
    from openpifpaf.network import model_migration, nets

    backbone = resolve_backbone(backbone)
    ckpt, label = _load_checkpoint(backbone, checkpoint)
    model = ckpt.get("model") if isinstance(ckpt, dict) else ckpt
    where = checkpoint or label
    if not isinstance(model, nets.Shell):
        raise SkelpipeError(f"{where}: holds no OpenPifPaf network (expected a dict with 'model')")
    model_migration.model_migration(model)
    base = getattr(model.base_net, "name", None)
    if checkpoint and base is not None and base != backbone:
        raise SkelpipeError(f"{checkpoint}: holds a {base} network, not --backbone {backbone}")
    cifs = [m for m in model.head_metas if isinstance(m, headmeta.Cif)]
    cafs = [m for m in model.head_metas if isinstance(m, headmeta.Caf)]
    if not cifs or not cafs or len(cifs[0].keypoints) != 17:
        raise SkelpipeError(f"{where}: not a COCO 17-keypoint pose network (heads: "
                            f"{[m.name for m in model.head_metas]})")
    model.eval()
    return Network(model, cifs[0], cafs[0], backbone, label)


def random_checkpoint(backbone: str, path, *, biased: bool = False, people: int = 0, seed: int = 0) -> Path:
    """Save a randomly initialised OpenPifPaf COCO-keypoint network (no pretrained weights) at ``path``.

    For tests and benchmarks. Untrained networks detect nobody; ``biased`` fixes the heads'
    output to a person everywhere (``bias_heads``) so that the decoder has people to decode
    (decode with ``decoding.BIASED_CONFIG``); ``people`` > 0 replaces it with the fields of that
    many people walking across the frame (``fields.PeopleFields``: a trained network's load on a
    clear clip; decode with the default settings).
    """

    op = _openpifpaf()
    from openpifpaf.network import factory
    from openpifpaf.plugins.coco import CocoKp

    torch.manual_seed(seed)
    # the backbones' ImageNet weights would be downloaded; their switch is class-level state
    saved = {cls: cls.pretrained for cls in factory.BASE_TYPES if hasattr(cls, "pretrained")}
    try:
        for cls in saved:
            cls.pretrained = False
        model, _ = op.network.Factory(base_name=resolve_backbone(backbone)).factory(head_metas=CocoKp().head_metas)
    finally:
        for cls, value in saved.items():
            cls.pretrained = value
    if biased or people:
        bias_heads(model)
    if people:
        from openpifpaf import headmeta

        heads = [next(i for i, h in enumerate(model.head_nets) if isinstance(h.meta, kind))
                 for kind in (headmeta.Cif, headmeta.Caf)]
        model.register_forward_hook(PeopleFields(model.head_nets[heads[0]].meta.pose,
                                                 model.head_nets[heads[1]].meta.skeleton, heads, people))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model, "epoch": 0, "meta": {"random_init": True, "biased": biased, "people": people}},
               path)
    return path


def bias_heads(model, height_cells: float = 6.0, confidence: float = 0.9, scale: float = 1.0):
    """Make the heads output one fixed field: a standing person (OpenPifPaf's upright COCO pose,
    ``height_cells`` field cells tall) anchored at every cell, with ``confidence`` everywhere.

    The head convolutions' weights are zeroed and their biases set, so the fields no longer
    depend on the image: the decoder then finds a grid of people (spaced by its non-maximum
    suppression) in every frame. For tests and benchmarks of everything after the network.
    """
    from openpifpaf import headmeta

    cif = next(h.meta for h in model.head_nets if isinstance(h.meta, headmeta.Cif))
    pose = np.asarray(cif.pose, np.float32)[:, :2] * np.float32([1, -1])
    pose = (pose - pose.mean(axis=0)) * (height_cells / (pose[:, 1].max() - pose[:, 1].min()))
    logit = float(np.log(confidence / (1 - confidence)))
    raw_scale = float(np.log(np.expm1(scale)))  # softplus⁻¹
    with torch.no_grad():
        for head in model.head_nets:
            meta = head.meta
            bias = head.conv.bias.view(head.n_fields, head.n_components, head.upsample_stride ** 2)
            head.conv.weight.zero_()
            bias.zero_()
            bias[:, 1] = logit
            if isinstance(meta, headmeta.Cif):
                bias[:, 2:4] = torch.from_numpy(pose)[:, :, None]
                bias[:, 4] = raw_scale
            elif isinstance(meta, headmeta.Caf):
                pairs = np.asarray(meta.skeleton) - 1
                bias[:, 2:4] = torch.from_numpy(pose[pairs[:, 0]])[:, :, None]
                bias[:, 4:6] = torch.from_numpy(pose[pairs[:, 1]])[:, :, None]
                bias[:, 6:8] = raw_scale
    return model


class Bf16Backbone(torch.nn.Module):
    """A backbone run under bf16 autocast (a CPU with AMX or AVX512-BF16: about 1.3–1.7× the
    frames/s of fp32), its features handed back in float32, so that the heads (1x1 convolutions,
    cheap) add the cell index to their vectors in float32: bf16 would round a joint's position
    to half a cell at the far side of the field."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        with torch.autocast(x.device.type, torch.bfloat16):
            return self.inner(x).float()


class Runner:
    """Runs the network on uint8 RGB batches; the next batch is launched before the last is read.

    ``launch(batch)`` starts the work (asynchronously on CUDA) and returns a handle;
    ``fields(handle)`` waits for it and returns (cif, caf) numpy arrays (B, F, C, h, w) in the
    network's dtype (float16 on CUDA, float32 on CPU: the backbone in bf16 where native).
    """

    def __init__(self, net: Network, device, half: bool | None = None, bf16: bool | None = None):
        self.device = device
        self.half = device.type == "cuda" if half is None else half
        self.dtype = torch.float16 if self.half else torch.float32
        self.model = net.model.to(device)
        if self.half:
            self.model.half()
        elif ((device.type == "cpu" and native_bf16(device)) if bf16 is None else bf16) \
                and not isinstance(self.model.base_net, Bf16Backbone):
            self.model.base_net = Bf16Backbone(self.model.base_net)
        # on a CPU, oneDNN's convolutions are faster channels-last (shufflenetv2k16 in bf16 at
        # 193 × 321, batch 4: 26 frames/s against 17), and the frames arrive that way (H, W, C)
        self.memory_format = torch.channels_last if device.type == "cpu" else torch.contiguous_format
        if device.type == "cpu":
            self.model.to(memory_format=torch.channels_last)
        self.cif_i, self.caf_i = net.cif_meta.head_index, net.caf_meta.head_index
        self.mean = torch.tensor(IMAGENET_MEAN, device=device, dtype=self.dtype).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(IMAGENET_STD, device=device, dtype=self.dtype).view(1, 3, 1, 1) * 255
        self._pinned: dict = {}
        self._flip = 0

    def _buffer(self, shape, slot):
        key = (tuple(shape), slot)
        if key not in self._pinned:
            self._pinned[key] = torch.empty(shape, dtype=self.dtype, pin_memory=self.device.type == "cuda")
        return self._pinned[key]

    def launch(self, batch: np.ndarray):
        with torch.inference_mode():
            x = torch.from_numpy(batch)
            if self.device.type == "cuda":
                x = x.pin_memory().to(self.device, non_blocking=True)
            x = x.permute(0, 3, 1, 2).to(self.dtype)
            x = (x - self.mean) / self.std
            heads = self.model(x.contiguous(memory_format=self.memory_format))
            cif, caf = heads[self.cif_i], heads[self.caf_i]
            if self.device.type != "cuda":
                return np.ascontiguousarray(cif.numpy()), np.ascontiguousarray(caf.numpy())
            self._flip ^= 1
            out_cif = self._buffer(cif.shape, ("cif", self._flip))
            out_caf = self._buffer(caf.shape, ("caf", self._flip))
            out_cif.copy_(cif, non_blocking=True)
            out_caf.copy_(caf, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            return event, out_cif, out_caf

    @staticmethod
    def fields(handle):
        if len(handle) == 2:
            return handle
        event, cif, caf = handle
        event.synchronize()
        return cif.numpy(), caf.numpy()
