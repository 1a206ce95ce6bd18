"""Graph convolutional networks for skeleton sequences (ST-GCN, the 2s-AGCN joint stream
(Js-AGCN), EfficientGCN-B0..B4) and Table 3's rivals trained without distillation,
PA-ResGCN-B19, PR-GCN and 3S-RA-GCN.

``build_model(ModelConfig(...))`` is the one entry point; every model maps ``x (N, C, T, V, M)``
to ``(logits (N, K), global feature (N, C'), part features (N, 5, C'))``, has ``model.config``,
``model.layout`` and ``model.features(x)`` → joint features ``(N*M, C', T', V)``.
"""

# each module registers its backbones when imported, in this order (that of BACKBONES)
from skelpipe.learn.models import stgcn, agcn, efficientgcn, resgcn, prgcn, ragcn  # noqa: F401
from skelpipe.learn.models.config import DEFAULT_CHANNELS, NETWORKS, ModelConfig, build_model
from skelpipe.learn.models.ragcn import classification_loss

BACKBONES = tuple(NETWORKS)

__all__ = ["BACKBONES", "DEFAULT_CHANNELS", "ModelConfig", "build_model", "classification_loss"]
