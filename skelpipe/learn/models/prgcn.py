"""PR-GCN (Li, Yi, Abu Farha, Gall, "Pose Refinement Graph Convolutional Network for
Skeleton-based Action Recognition", RA-L 2021) behind the same interface as ST-GCN.

Followed from the authors' released code (sj-li/PR-GCN, ``pr_gcn.py``):

- **Pose refinement module** (PRM): a 1x1 convolution to 32 channels, a graph layer, a ``3x1``
  temporal layer to 64, a graph layer and a 1x1 convolution back to the input channels give a
  shift that is added to the (normalised) joints. Only the first ``refined_channels`` channels
  (2: the coordinates x, y) are shifted; the authors zero the third (a 2D pose's confidence, a
  3D pose's depth).
- **Two branches**: the refined positions and their motion (difference to the previous frame,
  zero at the first) each enter a ``3x1`` temporal layer to 64 channels. The motion branch is
  five layers (temporal, temporal strided 2, graph, temporal, temporal strided 3); after each,
  the position branch fuses it: a graph layer over the concatenation (128 channels) to 64
  (the last to 128). Where the motion branch strides, the position branch is max-pooled over
  as many frames.
- **Head**: average pooling over 5 frames, a channel attention (cSE: pooled, 1x1 to 2C, ReLU,
  1x1 to C, sigmoid) multiplied in, and a graph layer to 256 channels.

Graph layers are the authors' ``gcn``: ST-GCN's spatial-configuration adjacency, itself a
parameter (started at A + 1e-4), a 1x1 convolution per subset, BN, a residual, ReLU. Temporal
layers are BN, convolution, BN, ReLU, without residual.

Where this differs on purpose: where a stride does not divide the length, the pools (to the
motion branch's length and the head's 5 frames) keep the last, shorter run of frames (the
authors' reshape needs lengths that divide, which the short clips of the CPU profiles do not
give; their head pool drops the remainder), ``data_bn`` also normalises over the M
person slots, and the head pools persons by their mean (the authors take the max), as
``SkeletonNet`` does for every backbone so that global and part features mean the same thing.
"""

import torch
import torch.nn.functional as F
from torch import nn

from skelpipe.learn.models.config import ModelConfig, register
from skelpipe.learn.models.graph import spatial_adjacency
from skelpipe.learn.models.stgcn import SkeletonNet, graph_conv

REFINED_CHANNELS = 2     # the input channels the PRM shifts (x, y)
HEAD_POOL = 5            # frames averaged before the channel attention


class GraphLayer(nn.Module):
    """The authors' ``gcn``: ``ReLU(BN(sum_k conv_k(x) A_k) + residual(x))``, A learned."""

    def __init__(self, in_channels: int, out_channels: int, adjacency: torch.Tensor):
        super().__init__()
        self.A = nn.Parameter(adjacency + 1e-4)
        self.conv = nn.Conv2d(in_channels, out_channels * adjacency.shape[0], 1)
        self.bn = nn.BatchNorm2d(out_channels)
        self.residual = nn.Identity() if in_channels == out_channels else nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels))

    def forward(self, x):
        y = graph_conv(x, self.conv.weight, self.conv.bias, self.A)
        return torch.relu(self.bn(y) + self.residual(x))


def temporal_layer(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """The authors' ``tcn`` (kernel 3, no residual): BN, conv, BN, ReLU."""
    return nn.Sequential(nn.BatchNorm2d(in_channels), nn.Conv2d(in_channels, out_channels, (3, 1), (stride, 1), (1, 0)),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class ChannelSE(nn.Module):
    """cSE: a sigmoid weight per channel from the pooled feature (1x1 to 2C, ReLU, 1x1 to C)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels * 2, 1)
        self.conv2 = nn.Conv2d(channels * 2, channels, 1)

    def forward(self, x):
        return torch.sigmoid(self.conv2(torch.relu(self.conv1(x.mean(dim=(2, 3), keepdim=True)))))


def pool_frames(x: torch.Tensor, stride: int, mode: str = "max") -> torch.Tensor:
    """Max (or average) over each run of ``stride`` frames of x (N, C, T, V), a last shorter run
    included: ``ceil(T / stride)`` frames, the length of a stride-``stride`` ``3x1`` convolution.
    Where ``stride`` divides T it is the authors' ``scale_T`` (and their ``avg_pool2d``)."""
    if stride == 1:
        return x
    pool = F.max_pool2d if mode == "max" else F.avg_pool2d
    return pool(x, (stride, 1), (stride, 1), ceil_mode=True)


@register("pr-gcn")
class PRGCN(SkeletonNet):
    def __init__(self, cfg: ModelConfig, refined_channels: int = REFINED_CHANNELS):
        super().__init__(cfg, [256])
        in_channels = cfg.in_channels
        a = torch.from_numpy(spatial_adjacency(self.layout))
        self.refine = nn.Sequential(nn.Conv2d(in_channels, 32, 1), GraphLayer(32, 32, a), temporal_layer(32, 64),
                                    GraphLayer(64, 64, a), nn.Conv2d(64, in_channels, 1))
        mask = torch.zeros(1, in_channels, 1, 1)
        mask[:, :refined_channels] = 1
        self.register_buffer("shift_mask", mask, persistent=False)
        self.position_in = temporal_layer(in_channels, 64)
        self.motion_in = temporal_layer(in_channels, 64)
        self.motion = nn.ModuleList([temporal_layer(64, 64), temporal_layer(64, 64, 2), GraphLayer(64, 64, a),
                                     temporal_layer(64, 64), temporal_layer(64, 64, 3)])
        self.motion_strides = (1, 2, 1, 1, 3)
        self.fuse = nn.ModuleList([GraphLayer(128, 64, a) for _ in range(4)] + [GraphLayer(128, 128, a)])
        self.attention = ChannelSE(128)
        self.head = GraphLayer(128, 256, a)

    def refined(self, x: torch.Tensor) -> torch.Tensor:
        """The PRM's corrected joints (N*M, C, T, V) of normalised joints x."""
        return x + self.refine(x) * self.shift_mask

    def blocks_forward(self, x):
        x = self.refined(x)
        motion = torch.zeros_like(x)
        motion[:, :, 1:] = x[:, :, 1:] - x[:, :, :-1]
        motion, x = self.motion_in(motion), self.position_in(x)
        for layer, stride, fuse in zip(self.motion, self.motion_strides, self.fuse):
            motion = layer(motion)
            x = fuse(torch.cat([pool_frames(x, stride), motion], dim=1))
        x = pool_frames(x, HEAD_POOL, "mean")
        return self.head(x * self.attention(x))
