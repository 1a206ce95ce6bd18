"""3S-RA-GCN (Song, Zhang, Shan, Wang, "Richly activated graph convolutional network for robust
skeleton-based action recognition", IEEE TCSVT 2021): S ST-GCN streams, each pushed onto the
joints the streams before it leave unactivated.

Stream 1 sees the whole input. Stream s sees the input multiplied by a mask that zeroes every
(frame, joint, person) point a preceding stream activated: the class activation map (CAM) of
stream k at the pooled feature point (t', v, m) is ``sum_c w_k[class, c] f_k[c, t', v, m]``
(``w_k`` its classifier, ``f_k`` its last block's features); a point is activated where the CAM's
softmax over all points of the instance exceeds ``1 - threshold`` (``cam_norm = "softmax"``, the
authors' released rule: ``1 - softmax > 0.3`` keeps a point) or where the CAM reaches
``threshold`` times the instance's largest (``cam_norm = "max"``). Frame t of the input belongs
to feature frame ``t * T' // T``. Masks carry no gradient.

Choices where the paper and the released code part (docs/method.md, §3S-RA-GCN): the masks are
per instance and from the same forward pass, as the paper's pipeline draws them (the released
code keeps one batch-averaged mask from the previous training step, also at test time); the
CAM is that of the class the streams so far predict (the sum of their logits), in training and
at test alike, since the model does not see labels (the released code uses the true label in
training). The prediction is the sum of the streams' logits; training minimises the
cross-entropy of that sum plus each stream's own (the released code's loss): ``stream_loss``.
The global and part features are the streams' means (widths as one stream's), so the model
can serve as a teacher.
"""

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from skelpipe.learn.models.config import ModelConfig, register
from skelpipe.learn.models.stgcn import STGCN
from skelpipe.skeleton import layouts

CAM_NORMS = ("softmax", "max")
DEFAULT_STREAMS = 3
DEFAULT_THRESHOLD = {"softmax": 0.3, "max": 0.5}


def activated_points(cam: torch.Tensor, norm: str, threshold: float) -> torch.Tensor:
    """Bool (N, T', V, M): the points each instance's CAM (N, T', V, M) activates."""
    flat = cam.flatten(1).float()
    if norm == "softmax":
        hit = flat.softmax(dim=1) > 1.0 - threshold
    else:
        hit = flat >= threshold * flat.amax(dim=1, keepdim=True)
    return hit.view_as(cam)


def frame_mask(keep: torch.Tensor, frames: int) -> torch.Tensor:
    """(N, 1, T, V, M) input mask from a feature-level keep mask (N, T', V, M): frame t
    follows feature frame ``t * T' // T``."""
    t_feat = keep.shape[1]
    index = torch.arange(frames, device=keep.device) * t_feat // frames
    return keep[:, index].unsqueeze(1)


@register("3s-ra-gcn")
class RAGCN(nn.Module):
    """``streams`` ST-GCNs of ``cfg``'s sizes with CAM masking; ``forward`` → ``(logits, global,
    parts)`` as every backbone. After a training-mode forward, ``stream_loss(y)`` is the streams'
    own cross-entropy."""

    def __init__(self, cfg: ModelConfig, streams=DEFAULT_STREAMS, cam_norm="softmax", threshold=None):
        super().__init__()
        if streams < 1 or cam_norm not in CAM_NORMS:
            raise ValueError(f"streams must be >= 1 and cam_norm one of {CAM_NORMS}")
        self.config = cfg
        self.layout, self.cam_norm = layouts.get(cfg.layout), cam_norm
        self.threshold = DEFAULT_THRESHOLD[cam_norm] if threshold is None else threshold
        stream = dataclasses.replace(cfg, backbone="stgcn")
        self.streams = nn.ModuleList(STGCN(stream) for _ in range(streams))
        self.stream_logits = None  # (S, N, K) of the last training-mode forward

    @property
    def fc(self) -> nn.Linear:
        """A stream's classifier: its ``in_features`` is the width of the global and part features."""
        return self.streams[0].fc

    def run_streams(self, x: torch.Tensor):
        """Every stream on its masked input: (logits (S, N, K), globals (S, N, C'),
        parts (S, N, 5, C'), input masks (S, N, 1, T, V, M))."""
        n, _, frames, _, m = x.shape
        keep = None
        outs, masks, total = [], [], 0
        for k, stream in enumerate(self.streams):
            mask = torch.ones_like(x[:, :1]) if keep is None else frame_mask(keep, frames).to(x.dtype)
            logits, glob, parts, z = stream.forward_features(x * mask)   # z (N*M, C', T', V)
            outs.append((logits, glob, parts))
            masks.append(mask)
            total = total + logits.detach()
            if k + 1 < len(self.streams):
                hit = self._activated(stream, z.detach(), total.argmax(dim=1), n, m)
                keep = ~hit if keep is None else keep & ~hit
        logits, globs, parts = (torch.stack(t) for t in zip(*outs))
        return logits, globs, parts, torch.stack(masks)

    def _activated(self, stream: STGCN, z: torch.Tensor, cls: torch.Tensor, n: int, m: int):
        """Bool (N, T', V, M): the points the CAM of class ``cls`` (N,) activates in ``stream``."""
        _, c, t, v = z.shape
        w = stream.fc.weight.detach()[cls].float()                     # (N, C')
        cam = torch.einsum("nmctv,nc->ntvm", z.float().view(n, m, c, t, v), w)
        return activated_points(cam, self.cam_norm, self.threshold)

    def forward(self, x: torch.Tensor):
        logits, globs, parts, _ = self.run_streams(x)
        self.stream_logits = logits if self.training else None
        return logits.sum(dim=0), globs.mean(dim=0), parts.mean(dim=0)

    def stream_loss(self, y: torch.Tensor) -> torch.Tensor:
        """Sum of the streams' own cross-entropies on the last training forward's logits."""
        if self.stream_logits is None:
            raise RuntimeError("stream_loss needs a training-mode forward first")
        return sum(F.cross_entropy(s.float(), y) for s in self.stream_logits)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Joint features (N*M, C', T', V) of the first (unmasked) stream."""
        return self.streams[0].features(x)


def classification_loss(model: nn.Module, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The training cross-entropy: of the logits, plus a multi-stream model's ``stream_loss``."""
    ce = F.cross_entropy(logits.float(), y)
    extra = getattr(model, "stream_loss", None)
    return ce if extra is None else ce + extra(y)
