"""PA-ResGCN (Song et al., "Stronger, Faster and More Explainable: A Graph Convolutional Baseline
for Skeleton-based Action Recognition", ACM MM 2020) behind the same interface as ST-GCN.

Followed from the authors' released code (ResGCNv1):

- **Multiple input branches**: joint, velocity and bone inputs, ``2C`` channels each (the same
  three as EfficientGCN, which grew out of ResGCN: ``efficientgcn.input_branches``). Each branch
  is a BN and three modules (64, 64, 32 channels); the three are concatenated into the main
  stream: three modules of 128 channels (the first strided) and three of 256 (the first strided).
- **Modules** (B19's basic blocks): ``ReLU(BN(gcn(x)))`` over hop-distance subsets 0..2 (the
  adjacency normalised over hops 0..3, the authors' ``max_hop=3``; a learnable edge weight per
  module), then ``ReLU(BN(tcn_9x1(.)) + residual(x))``; a branch's first module has no residual.
  (Bottleneck blocks are the authors' N-series, e.g. ResGCN-N51; B19 uses basic blocks.)
- **Part-wise attention** after every main-stream module: from the globally pooled feature, a
  bottleneck (a quarter of the channels) gives C x P scores, a softmax over the P parts, and
  each joint takes its part's weight: ``ReLU(BN(x * att) + x)``. The parts are the layout's five
  (``Layout.parts``), so every layout gets the attention NTU's five parts give in the authors' code.

``forward`` returns (logits, global feature, part features) pooled from the main stream's joint
features by ``SkeletonNet`` (the authors average the M persons too).
"""

import torch
from torch import nn

from skelpipe.learn.models.config import ModelConfig, register
from skelpipe.learn.models.efficientgcn import distance_adjacency, input_branches, parents
from skelpipe.learn.models.stgcn import SkeletonNet
from skelpipe.skeleton.layouts import PARTS, Layout

B19 = (1, 2, 3, 3)      # modules: initial, rest of each branch, 128- and 256-channel stages
TEMPORAL_WINDOW, MAX_GRAPH_DISTANCE, MAX_HOP = 9, 2, 3
REDUCTION = 4            # the part attention's inner channels: C / 4


def resgcn_adjacency(layout: Layout) -> torch.Tensor:
    """(3, V, V): hop subsets 0..2 of the adjacency normalised over hops 0..MAX_HOP (the authors'
    ``Graph(max_hop=3)``, of which the graph convolution uses the first three subsets)."""
    return torch.from_numpy(distance_adjacency(layout, MAX_HOP)[:MAX_GRAPH_DISTANCE + 1])


def part_of_joint(layout: Layout) -> torch.Tensor:
    """(V,) the index (in ``PARTS`` order) of the part each joint belongs to."""
    out = torch.full((layout.num_joints,), -1, dtype=torch.long)
    for p, name in enumerate(PARTS):
        out[list(layout.parts[name])] = p
    return out


def _residual(in_channels: int, out_channels: int, stride: int = 1) -> nn.Module:
    """The identity, or a strided 1x1 convolution with BN where the shape changes."""
    if in_channels == out_channels and stride == 1:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, (stride, 1)), nn.BatchNorm2d(out_channels))


class GraphConv(nn.Module):
    """``sum_k conv_k(x) A_k`` over the distance subsets."""

    def __init__(self, in_channels, out_channels, k=MAX_GRAPH_DISTANCE + 1):
        super().__init__()
        self.k = k
        self.gcn = nn.Conv2d(in_channels, out_channels * k, 1)

    def forward(self, x, adjacency):
        y = self.gcn(x)
        n, kc, t, v = y.shape
        return torch.einsum("nkctv,kvw->nctw", y.view(n, self.k, kc // self.k, t, v), adjacency)


class PartAttention(nn.Module):
    """Part-wise attention: softmax over the parts of C x P scores from the pooled feature; each
    joint is weighted by its part's score; ``ReLU(BN(x * att) + x)``."""

    def __init__(self, channels, joint_part: torch.Tensor):
        super().__init__()
        self.num_parts = len(PARTS)
        inner = channels // REDUCTION
        self.register_buffer("joint_part", joint_part, persistent=False)
        self.fcn = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, inner, 1), nn.BatchNorm2d(inner),
                                 nn.ReLU(inplace=True), nn.Conv2d(inner, channels * self.num_parts, 1))
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        n, c = x.shape[:2]
        att = self.fcn(x).view(n, c, 1, self.num_parts).softmax(dim=3)
        return torch.relu(self.bn(x * att.index_select(3, self.joint_part)) + x)


class ResGCNModule(nn.Module):
    """``ReLU(BN(gcn(x)))``, then ``ReLU(BN(tcn(.)) + residual(x))``, then the part attention if
    any; a learnable edge weight per module. ``initial`` modules (the first of each branch) have
    no residual."""

    def __init__(self, in_channels, out_channels, num_subsets, adjacency_size, stride=1, initial=False,
                 joint_part=None):
        super().__init__()
        self.residual = None if initial else _residual(in_channels, out_channels, stride)
        self.gcn = GraphConv(in_channels, out_channels, num_subsets)
        self.gcn_bn = nn.BatchNorm2d(out_channels)
        self.tcn = nn.Conv2d(out_channels, out_channels, (TEMPORAL_WINDOW, 1), (stride, 1), (TEMPORAL_WINDOW // 2, 0))
        self.tcn_bn = nn.BatchNorm2d(out_channels)
        self.att = PartAttention(out_channels, joint_part) if joint_part is not None else None
        self.edge = nn.Parameter(torch.ones(num_subsets, *adjacency_size))

    def forward(self, x, adjacency):
        y = torch.relu(self.gcn_bn(self.gcn(x, adjacency * self.edge)))
        y = self.tcn_bn(self.tcn(y))
        y = torch.relu(y if self.residual is None else y + self.residual(x))
        return self.att(y) if self.att is not None else y


def _branch(structure, in_channels, k, size) -> nn.ModuleList:
    mods = [ResGCNModule(in_channels, 64, k, size, initial=True)]
    mods += [ResGCNModule(64, 64, k, size, initial=True) for _ in range(structure[0] - 1)]
    mods += [ResGCNModule(64, 64, k, size) for _ in range(structure[1] - 1)]
    return nn.ModuleList(mods + [ResGCNModule(64, 32, k, size)])


def _main_stream(structure, in_channels, k, size, joint_part) -> nn.ModuleList:
    mods = [ResGCNModule(in_channels, 128, k, size, stride=2, joint_part=joint_part)]
    mods += [ResGCNModule(128, 128, k, size, joint_part=joint_part) for _ in range(structure[2] - 1)]
    mods += [ResGCNModule(128, 256, k, size, stride=2, joint_part=joint_part)]
    return nn.ModuleList(mods + [ResGCNModule(256, 256, k, size, joint_part=joint_part) for _ in range(structure[3] - 1)])


@register("pa-resgcn-b19")
class PAResGCN(SkeletonNet):
    """PA-ResGCN-B19: ``structure`` (1, 2, 3, 3) modules per stage; ``attention=False`` gives ResGCN-B19."""

    def __init__(self, cfg: ModelConfig, structure=B19, attention=True):
        super().__init__(cfg, [256], data_bn=False)
        layout = self.layout
        self.register_buffer("A", resgcn_adjacency(layout))
        self.register_buffer("parent", torch.tensor(parents(layout)))
        k, size, branch_in = self.A.shape[0], tuple(self.A.shape[1:]), 2 * cfg.in_channels
        self.branch_bn = nn.ModuleList(nn.BatchNorm2d(branch_in) for _ in range(3))
        self.branches = nn.ModuleList(_branch(structure, branch_in, k, size) for _ in range(3))
        joint_part = part_of_joint(layout) if attention else None
        self.main = _main_stream(structure, 3 * 32, k, size, joint_part)
        self.apply(_init)

    def blocks_forward(self, x):
        outs = []
        for bn, branch, inp in zip(self.branch_bn, self.branches, input_branches(x, self.layout, self.parent)):
            y = bn(inp)
            for module in branch:
                y = module(y, self.A)
            outs.append(y)
        y = torch.cat(outs, dim=1)
        for module in self.main:
            y = module(y, self.A)
        return y


def _init(module: nn.Module):
    """The authors' initialisation: Kaiming (fan out, ReLU) convolutions, unit BN, small classifier."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.001)
        nn.init.zeros_(module.bias)
