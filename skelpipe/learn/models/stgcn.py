"""ST-GCN (Yan et al. 2018) for any skeleton layout, with global and body-part features.

The stack is the reference one: ``data_bn`` over the input, ten spatio-temporal blocks
(graph convolution over the spatial-configuration partition with learnable edge importance,
then a 9x1 temporal convolution), residual connections as in the reference code (none in the
first block), global average pooling and a linear classifier, initialised as the reference
code does. ``forward`` also returns the global feature and the five part features docs/method.md
defines. Differences from the reference code, on purpose: ``data_bn`` normalises over M*V*C
(2s-AGCN's form; the reference pools the M persons), and activations are channels-last.
"""

import torch
import torch.nn.functional as F
from torch import nn

from skelpipe.learn.models.config import ModelConfig, register
from skelpipe.learn.models.graph import spatial_adjacency
from skelpipe.skeleton import layouts
from skelpipe.skeleton.layouts import PARTS, Layout
# How part features pool the M person slots: "mean" (docs/method.md, literally: every slot, an empty
# one included) or "present" (only the slots with a skeleton in the input; an empty slot — a
# single-person action's second person — contributes nothing).
PART_POOLS = ("mean", "present")


def block_strides(channels) -> list[int]:
    """Temporal stride of each block: 2 where the channel count changes (not the first block)."""
    return [1] + [2 if c != p else 1 for p, c in zip(channels, channels[1:])]


def part_pooling_matrix(layout: Layout) -> torch.Tensor:
    """(5, V) matrix whose row p averages the joints of part p (parts in ``PARTS`` order)."""
    pool = torch.zeros(len(PARTS), layout.num_joints)
    for p, name in enumerate(PARTS):
        joints = list(layout.parts[name])
        pool[p, joints] = 1.0 / len(joints)
    return pool


def graph_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               adjacency: torch.Tensor) -> torch.Tensor:
    """ST-GCN's graph convolution ``sum_k (W_k x + b_k) A_k``: x (N, C_in, T, V) → (N, C, T, W).

    ``weight`` (K*C, C_in, 1, 1) with output channel k*C + c (the reference ``conv``),
    ``adjacency`` (K, V, W). Computed channels-last without copies: a linear layer gives
    (N, T, V, K*C); then each (n, t) position is one product of the (W, V*K) adjacency with its
    (V*K, C) block, all positions in a single batched matmul (the adjacency is cast to the
    activations' dtype before it is broadcast, so autocast never materialises the broadcast).
    """
    k, v, w = adjacency.shape
    y = F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias)         # (N, T, V, K*C)
    n, t, _, kc = y.shape
    c = kc // k
    rows = y.reshape(n * t, v * k, c)                                     # row v*K + k
    a = adjacency.permute(2, 1, 0).reshape(w, v * k).to(rows.dtype)       # [w, v*K + k] = A[k, v, w]
    out = torch.bmm(a.expand(n * t, w, v * k), rows)                      # (N*T, W, C)
    return out.view(n, t, w, c).permute(0, 3, 1, 2)


class GraphConv(nn.Module):
    """ST-GCN's ``ConvTemporalGraphical``: a 1x1 convolution to K*C channels, then the graph."""

    def __init__(self, in_channels: int, out_channels: int, num_subsets: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels * num_subsets, kernel_size=1)

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        return graph_conv(x, self.conv.weight, self.conv.bias, adjacency)


class STGCNBlock(nn.Module):
    """Graph convolution, BN-ReLU-temporal conv-BN-dropout, residual, ReLU (reference ``st_gcn``)."""

    def __init__(self, in_channels, out_channels, num_subsets, temporal_kernel=9, stride=1,
                 dropout=0.0, residual=True):
        super().__init__()
        pad = (temporal_kernel - 1) // 2
        self.gcn = GraphConv(in_channels, out_channels, num_subsets)
        self.tcn = nn.Sequential(
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, (temporal_kernel, 1), (stride, 1), (pad, 0)),
            nn.BatchNorm2d(out_channels),
            nn.Dropout(dropout, inplace=True) if dropout > 0 else nn.Identity(),
        )
        if not residual:
            self.residual = None
        elif in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=(stride, 1)),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        y = self.tcn(self.gcn(x, adjacency))
        if self.residual is not None:
            y = y + self.residual(x)
        return torch.relu(y)


class SkeletonNet(nn.Module):
    """What the backbones share: data_bn, the block stack, pooling and the classifier.

    ``forward(x (N, C, T, V, M))`` → ``(logits (N, K), global (N, C'), parts (N, 5, C'))``.
    With ``keep_joint_features`` set, the last joint features stay in ``joint_features`` (SKD reads them).
    """

    keep_joint_features = False

    def __init__(self, cfg: ModelConfig, channels, data_bn: bool = True):
        """The network of ``cfg`` whose blocks have ``channels`` (``cfg.channels`` or a backbone's own)."""
        super().__init__()
        if cfg.part_pool not in PART_POOLS:
            raise ValueError(f"part_pool must be one of {PART_POOLS}, got {cfg.part_pool!r}")
        self.config = cfg
        self.part_pool_mode = cfg.part_pool
        self.layout = layout = layouts.get(cfg.layout)
        self.in_channels = cfg.in_channels
        self.num_classes = cfg.num_classes
        self.channels = tuple(channels)
        self.num_persons = cfg.num_persons
        v = layout.num_joints
        self.data_bn = nn.BatchNorm1d(cfg.num_persons * v * cfg.in_channels) if data_bn else nn.Identity()
        self.fc = nn.Linear(self.channels[-1], cfg.num_classes)
        self.register_buffer("part_pool", part_pooling_matrix(layout), persistent=False)

    def blocks_forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Joint features ``z`` (N*M, C', T', V) of an input (N, C, T, V, M)."""
        n, c, t, v, m = x.shape
        if (c, v, m) != (self.in_channels, self.layout.num_joints, self.num_persons):
            raise ValueError(
                f"input of shape {tuple(x.shape)} does not fit this model: expected "
                f"(N, {self.in_channels}, T, {self.layout.num_joints}, {self.num_persons}) "
                f"for layout {self.layout.name}")
        x = x.permute(0, 4, 3, 1, 2).reshape(n, m * v * c, t)
        x = self.data_bn(x)
        x = x.view(n, m, v, c, t).permute(0, 1, 3, 4, 2).reshape(n * m, c, t, v)
        x = x.contiguous(memory_format=torch.channels_last)
        z = self.blocks_forward(x)
        if self.keep_joint_features:
            self.joint_features = z
        return z

    def pool(self, z: torch.Tensor, n: int, present: torch.Tensor | None = None):
        """Global feature (N, C) and part features (N, 5, C) of joint features z (N*M, C, T', V).

        Both are means over T', the joints and the M person slots. With ``part_pool="present"``
        the part features average only the slots marked in ``present`` (N, M) bool.
        """
        _, c, _, v = z.shape
        per_joint = z.mean(dim=2).view(n, -1, c, v)                   # mean over T'
        mean_m = per_joint.mean(dim=1)                                 # mean over M
        glob = mean_m.mean(dim=2)
        if self.part_pool_mode == "present" and present is not None:
            w = present.to(per_joint.dtype)
            w = torch.where(w.sum(1, keepdim=True) > 0, w, torch.ones_like(w))  # nobody: every slot
            w = w / w.sum(1, keepdim=True)
            mean_m = torch.einsum("nmcv,nm->ncv", per_joint, w)
        parts = torch.einsum("ncv,pv->npc", mean_m, self.part_pool)
        return glob, parts

    def forward(self, x: torch.Tensor):
        return self.forward_features(x)[:3]

    def forward_features(self, x: torch.Tensor):
        """``forward``'s (logits, global, parts) and the joint features z they pool."""
        z = self.features(x)
        present = x.detach().abs().amax(dim=(1, 2, 3)) > 0 if self.part_pool_mode == "present" else None
        glob, parts = self.pool(z, x.shape[0], present)
        return self.fc(glob), glob, parts, z


def reference_init(module: nn.Module):
    """The reference code's ``weights_init``: conv/linear weights N(0, 0.02), BN weights
    N(1, 0.02), biases 0."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


@register("stgcn")
class STGCN(SkeletonNet):
    """ST-GCN with the spatial-configuration partition and learnable edge importance."""

    def __init__(self, cfg: ModelConfig, edge_importance=True):
        super().__init__(cfg, cfg.channels)
        adjacency = torch.from_numpy(spatial_adjacency(self.layout))
        self.register_buffer("A", adjacency)
        k = adjacency.shape[0]
        ins = (cfg.in_channels,) + self.channels[:-1]
        self.blocks = nn.ModuleList(
            STGCNBlock(i, o, k, cfg.temporal_kernel, s, dropout=cfg.dropout if b > 0 else 0.0,
                       residual=b > 0)
            for b, (i, o, s) in enumerate(zip(ins, self.channels, block_strides(self.channels))))
        self.edge_importance = nn.ParameterList(
            nn.Parameter(torch.ones_like(adjacency), requires_grad=edge_importance)
            for _ in self.blocks)
        self.apply(reference_init)

    def blocks_forward(self, x):
        for block, importance in zip(self.blocks, self.edge_importance):
            x = block(x, self.A * importance)
        return x
