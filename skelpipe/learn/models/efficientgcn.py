"""EfficientGCN-Bx (Song et al., "Constructing Stronger and Faster Baselines for Skeleton-based
Action Recognition", TPAMI 2022) behind the same interface as ST-GCN.

- **Early-fused multiple input branches**: joint (position and position relative to the
  layout's centre joint), velocity (differences to the next and the second-next frame) and bone
  (vector to the parent joint and its angle to each axis), each ``2C`` channels for a ``C``
  channel input. Defined for every layout through its bones (parents found from its centre).
  Each branch is a BN, a stem (spatial graph layer + temporal layer) and the first
  ``fusion_stage`` blocks; the branches are concatenated into the main stream.
- **Blocks**: a spatial graph convolution over hop-distance subsets 0..2 with learnable edge
  weights, ``depth`` separable temporal layers of the authors' released configurations (the
  sandglass ``SG`` layer: depthwise ``5x1``, pointwise to half the channels and back, depthwise
  ``5x1``, residual; the first one strided), and **ST-JointAtt** (frame and joint attention from
  the pooled features, multiplied, with a residual; bottleneck of half the channels).
- **Compound scaling**: from B0's blocks ``[[48,1,0.5],[24,1,0.5],[64,2,1],[128,2,1]]`` (channels,
  stride, depth), Bx multiplies channels by 1.2^x (to a multiple of 16) and depth by 1.35^x
  (rounded): ``scale=4`` gives B4 ``[[96,1,2],[48,1,2],[128,2,3],[272,2,3]]``.

``forward`` returns (logits, global feature, part features) like the other backbones, pooled
from the main stream's joint features by ``SkeletonNet``; Swish activations, dropout 0.25
before the classifier, and the authors' initialisation.
"""

import math

import numpy as np
import torch
from torch import nn

from skelpipe.learn.models.config import ModelConfig, register
from skelpipe.learn.models.graph import hop_distance
from skelpipe.learn.models.stgcn import SkeletonNet
from skelpipe.skeleton.layouts import Layout

B0_BLOCKS = ((48, 1, 0.5), (24, 1, 0.5), (64, 2, 1), (128, 2, 1))   # (channels, stride, depth)
SCALE_ARGS = (1.2, 1.35)                                            # width and depth coefficients
STEM_CHANNELS = 64
FUSION_STAGE = 2
TEMPORAL_WINDOW, MAX_GRAPH_DISTANCE = 5, 2
REDUCT_RATIO = 2                 # the sandglass layers' and ST-JointAtt's bottleneck (released configs)


def scaled_blocks(scale: int) -> list[tuple[int, int, int]]:
    """The blocks of EfficientGCN-B``scale`` (compound scaling of B0's)."""
    width, depth = (math.pow(a, scale) for a in SCALE_ARGS)
    return [(max(int(round(c * width / 16)) * 16, 16), s, int(round(d * depth))) for c, s, d in B0_BLOCKS]


def distance_adjacency(layout: Layout, max_distance: int = MAX_GRAPH_DISTANCE) -> np.ndarray:
    """(max_distance + 1, V, V): subset k links joints k hops apart, column-normalised over the
    whole neighbourhood (EfficientGCN's ``distance`` strategy)."""
    hop = hop_distance(layout, max_hop=max_distance)
    within = (hop <= max_distance).astype(np.float64)
    norm = within / within.sum(axis=0, keepdims=True)
    return np.stack([np.where(hop == k, norm, 0.0) for k in range(max_distance + 1)]).astype(np.float32)


def parents(layout: Layout) -> list[int]:
    """Each joint's parent on the way to the layout's centre (the centre is its own parent)."""
    to_center = hop_distance(layout, max_hop=layout.num_joints)[:, layout.center]
    out = list(range(layout.num_joints))
    for a, b in layout.edges:
        child, parent = (a, b) if to_center[a] > to_center[b] else (b, a)
        out[child] = parent
    return out


def input_branches(x: torch.Tensor, layout: Layout, parent: torch.Tensor) -> list[torch.Tensor]:
    """Joint, velocity and bone inputs (each (N, 2C, T, V)) of ``x`` (N, C, T, V)."""
    joint = torch.cat([x, x - x[..., layout.center:layout.center + 1]], dim=1)
    v1, v2 = torch.zeros_like(x), torch.zeros_like(x)
    v1[:, :, :-1] = x[:, :, 1:] - x[:, :, :-1]
    v2[:, :, :-2] = x[:, :, 2:] - x[:, :, :-2]
    bone = x - x[..., parent]
    length = bone.norm(dim=1, keepdim=True)
    angle = torch.where(length > 0, torch.acos((bone / length.clamp_min(1e-6)).clamp(-1, 1)),
                        torch.zeros_like(bone))
    return [joint, torch.cat([v1, v2], dim=1), torch.cat([bone, angle], dim=1)]


class SpatialGraphLayer(nn.Module):
    """``act(BN(sum_k conv_k(x) (A_k * edge_k)) + residual)``."""

    def __init__(self, in_channels: int, out_channels: int, adjacency: torch.Tensor):
        super().__init__()
        self.k = adjacency.shape[0]
        self.conv = nn.Conv2d(in_channels, out_channels * self.k, 1)
        self.register_buffer("A", adjacency)
        self.edge = nn.Parameter(torch.ones_like(adjacency))
        self.bn = nn.BatchNorm2d(out_channels)
        self.residual = nn.Identity() if in_channels == out_channels else nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels))
        self.act = nn.SiLU(inplace=True)

    def forward(self, x):
        y = self.conv(x)
        n, kc, t, v = y.shape
        y = torch.einsum("nkctv,kvw->nctw", y.view(n, self.k, kc // self.k, t, v), self.A * self.edge)
        return self.act(self.bn(y) + self.residual(x))


class TemporalBasicLayer(nn.Module):
    """The stem's temporal layer: ``act(BN(conv_{5x1}(x)) + x)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, (TEMPORAL_WINDOW, 1), padding=(TEMPORAL_WINDOW // 2, 0))
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)) + x)


class TemporalSGLayer(nn.Module):
    """The sandglass temporal layer of the authors' released configurations (``layer_type: SG``):
    depthwise ``5x1``, pointwise down to ``C / REDUCT_RATIO``, pointwise back to ``C``, depthwise
    ``5x1`` (strided), plus the residual."""

    def __init__(self, channels: int, stride: int = 1):
        super().__init__()
        inner = channels // REDUCT_RATIO
        pad = (TEMPORAL_WINDOW // 2, 0)
        self.depthwise1 = nn.Sequential(
            nn.Conv2d(channels, channels, (TEMPORAL_WINDOW, 1), padding=pad, groups=channels), nn.BatchNorm2d(channels))
        self.reduce = nn.Sequential(nn.Conv2d(channels, inner, 1), nn.BatchNorm2d(inner))
        self.expand = nn.Sequential(nn.Conv2d(inner, channels, 1), nn.BatchNorm2d(channels))
        self.depthwise2 = nn.Sequential(
            nn.Conv2d(channels, channels, (TEMPORAL_WINDOW, 1), (stride, 1), pad, groups=channels),
            nn.BatchNorm2d(channels))
        self.residual = nn.Identity() if stride == 1 else nn.Sequential(
            nn.Conv2d(channels, channels, 1, (stride, 1)), nn.BatchNorm2d(channels))
        self.act = nn.SiLU(inplace=True)

    def forward(self, x):
        y = self.reduce(self.act(self.depthwise1(x)))
        y = self.depthwise2(self.act(self.expand(y)))
        return y + self.residual(x)


class STJointAttention(nn.Module):
    """ST-JointAtt: frame and joint attention maps from features pooled over joints and frames,
    through one shared bottleneck; ``act(BN(x * att) + x)``."""

    def __init__(self, channels: int):
        super().__init__()
        inner = channels // REDUCT_RATIO
        self.fcn = nn.Sequential(nn.Conv2d(channels, inner, 1), nn.BatchNorm2d(inner), nn.Hardswish(inplace=True))
        self.conv_t = nn.Conv2d(inner, channels, 1)
        self.conv_v = nn.Conv2d(inner, channels, 1)
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x):
        t, v = x.shape[2], x.shape[3]
        pooled = torch.cat([x.mean(3, keepdim=True), x.mean(2, keepdim=True).transpose(2, 3)], dim=2)
        a_t, a_v = torch.split(self.fcn(pooled), [t, v], dim=2)
        att = self.conv_t(a_t).sigmoid() * self.conv_v(a_v.transpose(2, 3)).sigmoid()
        return self.act(self.bn(x * att) + x)


def blocks(in_channels: int, block_args, adjacency: torch.Tensor) -> nn.Sequential:
    """Each block: a spatial graph layer, ``depth`` temporal layers, ST-JointAtt."""
    layers, last = [], in_channels
    for channels, stride, depth in block_args:
        layers.append(SpatialGraphLayer(last, channels, adjacency))
        layers += [TemporalSGLayer(channels, stride if j == 0 else 1) for j in range(depth)]
        layers.append(STJointAttention(channels))
        last = channels
    return nn.Sequential(*layers)


@register("efficientgcn-b0", "efficientgcn-b2", "efficientgcn-b4")
class EfficientGCN(SkeletonNet):
    """EfficientGCN-Bx, x (``scale``) from the backbone's name; ``cfg.dropout`` 0 is the authors' 0.25."""

    def __init__(self, cfg: ModelConfig):
        scale = int(cfg.backbone.removeprefix("efficientgcn-b"))
        args = scaled_blocks(scale)
        super().__init__(cfg, [c for c, _, _ in args], data_bn=False)
        self.scale = scale
        layout = self.layout
        adjacency = torch.from_numpy(distance_adjacency(layout))
        self.register_buffer("parent", torch.tensor(parents(layout)))
        branch_in = 2 * cfg.in_channels
        self.branches = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(branch_in), SpatialGraphLayer(branch_in, STEM_CHANNELS, adjacency),
                          TemporalBasicLayer(STEM_CHANNELS), blocks(STEM_CHANNELS, args[:FUSION_STAGE], adjacency))
            for _ in range(3))
        fused = 3 * args[FUSION_STAGE - 1][0]
        self.main = blocks(fused, args[FUSION_STAGE:], adjacency)
        self.dropout = nn.Dropout(cfg.dropout or 0.25)
        self.apply(_init)

    def blocks_forward(self, x):
        inputs = input_branches(x, self.layout, self.parent)
        return self.main(torch.cat([b(i) for b, i in zip(self.branches, inputs)], dim=1))

    def forward(self, x):
        z = self.features(x)
        present = x.detach().abs().amax(dim=(1, 2, 3)) > 0 if self.part_pool_mode == "present" else None
        glob, parts = self.pool(z, x.shape[0], present)
        return self.fc(self.dropout(glob)), glob, parts


def _init(module: nn.Module):
    """The authors' initialisation: Kaiming (fan out) convolutions, unit BN, small classifier."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="leaky_relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.001)
        nn.init.zeros_(module.bias)
