"""What rebuilds a network: ``ModelConfig`` (stored as the ``model`` section of a run's
``model.json``), the backbones by name (each model module registers its own, as each dataset
module does), and ``build_model``."""

import dataclasses
from dataclasses import dataclass

from skelpipe.core.errors import SkelpipeError

DEFAULT_CHANNELS = (64, 64, 64, 64, 128, 128, 128, 256, 256, 256)

# The fields a training config chooses; the others (layout, in_channels, num_classes, num_persons)
# are the data's.
CHOSEN_FIELDS = ("backbone", "channels", "temporal_kernel", "dropout", "part_pool")


@dataclass(frozen=True)
class ModelConfig:
    """Every setting that rebuilds a network. ``channels`` and ``temporal_kernel`` size ST-GCN,
    2s-AGCN and 3S-RA-GCN; EfficientGCN-Bx is sized by its name's x, and PA-ResGCN-B19 and PR-GCN
    have their authors' fixed sizes. ``dropout`` 0 gives EfficientGCN its authors' 0.25."""

    backbone: str = "stgcn"
    layout: str = "coco17"
    in_channels: int = 3
    num_classes: int = 60
    channels: tuple = DEFAULT_CHANNELS
    temporal_kernel: int = 9
    num_persons: int = 2
    dropout: float = 0.0
    part_pool: str = "mean"

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(self.channels))

    @classmethod
    def of(cls, settings, **data) -> "ModelConfig":
        """The network that ``settings`` (a ``TrainConfig``) choose, sized by ``data``: layout,
        in_channels, num_classes, num_persons."""
        return cls(**{k: getattr(settings, k) for k in CHOSEN_FIELDS}, **data)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))

#: backbone name → its network class, which is built as ``cls(cfg)``
NETWORKS: dict[str, type] = {}


def register(*names):
    """Class decorator: make a network known as each of ``names``."""
    def add(cls):
        for name in names:
            NETWORKS[name] = cls
        return cls
    return add


def build_model(cfg: ModelConfig):
    """The network ``cfg`` describes, with ``model.config`` = ``cfg``."""
    if cfg.backbone not in NETWORKS:
        raise SkelpipeError(f"unknown backbone {cfg.backbone!r}; known: {', '.join(NETWORKS)}")
    return NETWORKS[cfg.backbone](cfg)
