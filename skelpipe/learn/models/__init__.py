"""Graph convolutional networks for skeleton sequences (ST-GCN, the 2s-AGCN joint stream
(Js-AGCN), EfficientGCN-B0..B4) and Table 3's rivals trained without distillation,
PA-ResGCN-B19, PR-GCN and 3S-RA-GCN.

``build_model`` is the one entry point; every model maps ``x (N, C, T, V, M)`` to
``(logits (N, K), global feature (N, C'), part features (N, 5, C'))``, has ``model.layout``
and ``model.features(x)`` → joint features ``(N*M, C', T', V)``.
"""

from skelpipe.core.errors import SkelpipeError
from skelpipe.learn.models.agcn import AGCN
from skelpipe.learn.models.efficientgcn import EfficientGCN
from skelpipe.learn.models.prgcn import PRGCN
from skelpipe.learn.models.ragcn import RAGCN, classification_loss
from skelpipe.learn.models.resgcn import PAResGCN
from skelpipe.learn.models.stgcn import DEFAULT_CHANNELS, STGCN
from skelpipe.skeleton import layouts

BACKBONES = ("stgcn", "agcn", "efficientgcn-b0", "efficientgcn-b2", "efficientgcn-b4", "pa-resgcn-b19", "pr-gcn",
             "3s-ra-gcn")


def build_model(backbone="stgcn", layout="coco17", in_channels=3, num_classes=60,
                channels=DEFAULT_CHANNELS, temporal_kernel=9, num_persons=2, dropout=0.0,
                part_pool="mean"):
    """The ``backbone`` network for skeletons of ``layout`` (name or Layout). EfficientGCN-Bx is
    sized by its scaling coefficient x (``channels`` and ``temporal_kernel`` are ST-GCN's and
    AGCN's); its dropout before the classifier is its authors' 0.25 when ``dropout`` is 0.
    PA-ResGCN-B19 and PR-GCN have their authors' fixed sizes (``channels``, ``temporal_kernel``
    and ``dropout`` do not apply)."""
    if isinstance(layout, str):
        layout = layouts.get(layout)
    kwargs = dict(in_channels=in_channels, num_classes=num_classes, channels=tuple(channels),
                  temporal_kernel=temporal_kernel, num_persons=num_persons, dropout=dropout,
                  part_pool=part_pool)
    if backbone == "stgcn":
        return STGCN(layout, **kwargs)
    if backbone == "agcn":
        return AGCN(layout, **kwargs)
    if backbone == "3s-ra-gcn":
        return RAGCN(layout, **kwargs)
    if backbone.startswith("efficientgcn-b") and backbone in BACKBONES:
        return EfficientGCN(layout, in_channels, num_classes, scale=int(backbone[-1]), num_persons=num_persons,
                            dropout=dropout or 0.25, part_pool=part_pool)
    if backbone == "pa-resgcn-b19":
        return PAResGCN(layout, in_channels, num_classes, num_persons=num_persons, part_pool=part_pool)
    if backbone == "pr-gcn":
        return PRGCN(layout, in_channels, num_classes, num_persons=num_persons, part_pool=part_pool)
    raise SkelpipeError(f"unknown backbone {backbone!r}; known: {', '.join(BACKBONES)}")


__all__ = ["BACKBONES", "DEFAULT_CHANNELS", "build_model", "classification_loss"]
