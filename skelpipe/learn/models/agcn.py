"""2s-AGCN joint stream (Shi et al. 2019) behind the same interface as ST-GCN.

Each block's graph is adaptive: ``A_k + B_k + C_k(x)`` with A_k the fixed skeleton graph
(self / inward / outward, as 2s-AGCN builds it), B_k a learned offset and C_k the
data-dependent similarity ``softmax(theta(x)^T phi(x))`` of embedded joints. Block layout,
residuals and initialisation follow the authors' ``model/agcn.py``.
"""

import math

import numpy as np
import torch
from torch import nn

from skelpipe.learn.models.graph import hop_distance
from skelpipe.learn.models.config import ModelConfig, register
from skelpipe.learn.models.stgcn import SkeletonNet, block_strides
from skelpipe.skeleton.layouts import Layout


def _normalize_digraph(a: np.ndarray) -> np.ndarray:
    """Divide every column by its sum (columns summing to 0 stay 0), as 2s-AGCN's tools.py."""
    sums = a.sum(axis=0)
    return a / np.where(sums > 0, sums, 1.0)[None, :]


def agcn_adjacency(layout: Layout) -> np.ndarray:
    """(3, V, V): identity, inward and outward bones, each column-normalised.

    A bone points inward from the joint farther from the centre to the nearer one (bones
    between two joints equally far keep the layout's order). ``A[k, j, i]`` carries j to i.
    """
    v = layout.num_joints
    to_center = hop_distance(layout, max_hop=v)[:, layout.center]
    inward = np.zeros((v, v))
    for a, b in layout.edges:
        child, parent = (a, b) if to_center[a] >= to_center[b] else (b, a)
        inward[parent, child] = 1.0          # 2s-AGCN's edge2mat: A[j, i] = 1 for the link (i, j)
    return np.stack([np.eye(v), _normalize_digraph(inward), _normalize_digraph(inward.T)]).astype(np.float32)


class AdaptiveGraphConv(nn.Module):
    """2s-AGCN's ``unit_gcn``: ``BN(sum_k W_k x (A_k + B_k + C_k(x))) + down(x)``, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, adjacency: torch.Tensor, embed_ratio: int = 4):
        super().__init__()
        k, v, _ = adjacency.shape
        self.num_subsets = k
        self.inter = max(1, out_channels // embed_ratio)
        self.register_buffer("A", adjacency.clone())
        self.B = nn.Parameter(torch.full_like(adjacency, 1e-6))
        self.embed = nn.Conv2d(in_channels, 2 * k * self.inter, 1)    # theta_k and phi_k, all k
        self.conv_d = nn.Conv2d(in_channels, k * out_channels, 1)      # W_k, all k
        self.bn = nn.BatchNorm2d(out_channels)
        if in_channels != out_channels:
            self.down = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels))
        else:
            self.down = nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.conv_d.weight, 0, math.sqrt(2.0 / (out_channels * k)))  # conv_branch_init
        nn.init.constant_(self.bn.weight, 1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, v = x.shape
        k, inter = self.num_subsets, self.inter
        emb = self.embed(x).reshape(n, 2, k, inter * t, v)
        similarity = torch.einsum("nkiv,nkiw->nkvw", emb[:, 0], emb[:, 1]) / (inter * t)
        adjacency = torch.softmax(similarity, dim=-2) + (self.A + self.B)    # (N, K, V, W)
        bias = self.conv_d.bias.view(k, -1).sum(0)
        y = nn.functional.conv2d(x, self.conv_d.weight).reshape(n, k, -1, t, v)
        y = torch.einsum("nkctv,nkvw->nctw", y, adjacency) + bias[None, :, None, None]
        return torch.relu(self.bn(y) + self.down(x))


class AGCNBlock(nn.Module):
    """2s-AGCN's ``TCN_GCN_unit``: adaptive graph conv, 9x1 temporal conv + BN, residual, ReLU."""

    def __init__(self, in_channels, out_channels, adjacency, temporal_kernel=9, stride=1, residual=True):
        super().__init__()
        pad = (temporal_kernel - 1) // 2
        self.gcn = AdaptiveGraphConv(in_channels, out_channels, adjacency)
        self.tcn = nn.Sequential(
            nn.Conv2d(out_channels, out_channels, (temporal_kernel, 1), (stride, 1), (pad, 0)),
            nn.BatchNorm2d(out_channels))
        if not residual:
            self.residual = None
        elif in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, (stride, 1)),
                                          nn.BatchNorm2d(out_channels))
        for m in (self.tcn[0],) + ((self.residual[0],) if isinstance(self.residual, nn.Sequential) else ()):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.tcn(self.gcn(x))
        if self.residual is not None:
            y = y + self.residual(x)
        return torch.relu(y)


@register("agcn")
class AGCN(SkeletonNet):
    """The 2s-AGCN joint stream; ``dropout`` acts on the pooled feature before the classifier."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, cfg.channels)
        adjacency = torch.from_numpy(agcn_adjacency(self.layout))
        ins = (cfg.in_channels,) + self.channels[:-1]
        self.blocks = nn.Sequential(*(
            AGCNBlock(i, o, adjacency, cfg.temporal_kernel, s, residual=b > 0)
            for b, (i, o, s) in enumerate(zip(ins, self.channels, block_strides(self.channels)))))
        self.dropout = nn.Dropout(cfg.dropout)
        nn.init.normal_(self.fc.weight, 0, math.sqrt(2.0 / cfg.num_classes))

    def blocks_forward(self, x):
        return self.blocks(x)

    def forward(self, x: torch.Tensor):
        z = self.features(x)
        glob, parts = self.pool(z, x.shape[0])
        return self.fc(self.dropout(glob)), glob, parts
