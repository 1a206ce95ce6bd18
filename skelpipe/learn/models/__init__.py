"""Graph convolutional networks for skeleton sequences (ST-GCN, 2s-AGCN joint stream).

``build_model`` is the one entry point; every model maps ``x (N, C, T, V, M)`` to
``(logits (N, K), global feature (N, C'), part features (N, 5, C'))``, has ``model.layout``
and ``model.features(x)`` → joint features ``(N*M, C', T', V)``.
"""

from skelpipe.core.errors import SkelpipeError
from skelpipe.learn.models.agcn import AGCN
from skelpipe.learn.models.stgcn import DEFAULT_CHANNELS, STGCN
from skelpipe.skeleton import layouts

BACKBONES = ("stgcn", "agcn")


def build_model(backbone="stgcn", layout="coco17", in_channels=3, num_classes=60,
                channels=DEFAULT_CHANNELS, temporal_kernel=9, num_persons=2, dropout=0.0,
                part_pool="mean"):
    """The ``backbone`` network ("stgcn" or "agcn") for skeletons of ``layout`` (name or Layout)."""
    if isinstance(layout, str):
        layout = layouts.get(layout)
    kwargs = dict(in_channels=in_channels, num_classes=num_classes, channels=tuple(channels),
                  temporal_kernel=temporal_kernel, num_persons=num_persons, dropout=dropout,
                  part_pool=part_pool)
    if backbone == "stgcn":
        return STGCN(layout, **kwargs)
    if backbone == "agcn":
        return AGCN(layout, **kwargs)
    raise SkelpipeError(f"unknown backbone {backbone!r}; known: {', '.join(BACKBONES)}")


__all__ = ["BACKBONES", "DEFAULT_CHANNELS", "build_model"]
