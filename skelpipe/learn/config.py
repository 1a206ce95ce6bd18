"""The settings of a training run, checked when they are made (``TrainConfig``).

A pipeline's ``[teacher]`` / ``[student]`` sections, ``skelpipe train``'s options and the
benchmarks all build one of these; a wrong type or value is one line naming the setting.
``settings()`` is the part of a config that defines the result (runtime-only fields left out):
it keys both the cache and a run directory's resume check.
"""

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from skelpipe.core.errors import SkelpipeError, did_you_mean
from skelpipe.core.fields import check_known, check_types
from skelpipe.learn.models import BACKBONES, DEFAULT_CHANNELS
from skelpipe.learn.models.stgcn import PART_POOLS
from skelpipe.skeleton import noise

STAGES = ("teacher", "student")
# In the order of the report's rows: the baselines, the paper's rivals (Table 3), then PMSC.
KD_VARIANTS = ("none", "kl", "global-msc", "skd", "pe-gcn", "pmsc")
INITS = ("random", "teacher")
PROJECTIONS = ("none", "linear")
PE_GCN_SCORES = ("cosine", "bilinear")

# Settings that only the distillation term reads: a student without KD ignores them.
KD_FIELDS = ("alpha", "alpha_warmup", "w", "tau", "kl_temperature", "hq_topup", "part_pool", "projection",
             "skd_revision", "pe_gcn_score")

# Settings that only the occlusion reads: a run at OP 0 ignores them.
OCCLUSION_FIELDS = ("occlusion_mode", "occlusion_draws", "occlusion_seed", "occlusion_channels",
                    "occlusion_block")

# Settings that change how fast a run goes, not what it computes; left out of the config key.
RUNTIME_FIELDS = ("device", "compile", "eval_every", "teacher_features", "deterministic",
                  "eval_batch_size")

# Settings added after results were cached: in the key only away from their default, so that
# adding them left every existing key (and cache entry) as it was.
LATER_FIELDS = {"max_steps": 0, "occlusion_channels": "all", "occlusion_block": 15, "init": "random",
                "projection": "none", "skd_revision": True,
                "pe_gcn_score": "cosine"}


@dataclass
class TrainConfig:
    """Every setting of a training run; the paper's values are the defaults (docs/method.md, §Training schedule and defaults)."""

    stage: str = "teacher"                 # teacher | student
    kd: str = "none"                       # student distillation: none | kl | global-msc | skd | pe-gcn | pmsc
    backbone: str = "stgcn"
    channels: tuple = DEFAULT_CHANNELS
    temporal_kernel: int = 9
    dropout: float = 0.0
    part_pool: str = "mean"                # part features over the person slots: mean | present
    part_dropout: float = 0.0              # probability of zeroing one random body part of a training input
    epochs: int = 60
    batch_size: int = 64                   # global batch (split over the ranks under DDP)
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple = (30, 40, 50)
    gamma: float = 0.1
    alpha: float = 1.0                     # weight of the distillation term
    alpha_warmup: int = 0                  # > 0: alpha ramps up linearly over this many epochs
    w: float = 0.5                         # weight of the positives in the MSC losses
    tau: float = 1.0                       # temperature of the MSC losses
    kl_temperature: float = 1.0            # temperature of the KL baseline
    hq_topup: int = 0                      # extra D_pair HQ instances added to every B_H
    skd_revision: bool = True              # skd only: revise each term's gradient against the cross-entropy's
    pe_gcn_score: str = "cosine"           # pe-gcn only: cosine (of W g_L and g_H, / tau) | bilinear (CPC's g_H · W g_L)
    projection: str = "none"               # pmsc only: none | linear (a learned map per part, student → teacher channels)
    lq_data: str = "all"                   # student's LQ data: all (D_pair ∪ D_sol) | pair (D_pair)
    op: float = 0.0                        # occlusion probability of the LQ input (student)
    occlusion_mode: str = "track"          # track | joint | block
    occlusion_channels: str = "all"        # all: an occluded joint loses every channel; xy: x and y only
    occlusion_block: int = 15              # block mode: frames (of the packed sequence) per block
    occlusion_draws: str = "fixed"         # fixed: one draw per instance; fresh: new every epoch
    occlusion_seed: int = 0                # the training masks' seed (seed leaves them alone)
    seed: int = 0                          # initialisation and data order
    init: str = "random"                   # student start: random | teacher (every tensor whose name and shape match)
    amp: bool = True                       # bf16 autocast where native (CUDA; a CPU with AMX or AVX512-BF16)
    device: str = "auto"
    compile: bool = False
    eval_every: int = 0                    # test top-1/top-5 every N epochs (0: never)
    eval_batch_size: int = 256
    teacher_features: str = "cached"       # cached | online
    deterministic: bool = False            # deterministic kernels (slower on CUDA)
    max_steps: int = 0                     # > 0: end every epoch after this many steps (benchmarks)

    def __post_init__(self):
        # types first, so that a bad --set is one line, not a TypeError
        check_types("training config", type(self), {f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        self.channels = tuple(self.channels)
        self.milestones = tuple(self.milestones)
        checks = [
            (self.stage in STAGES, f"stage must be one of {STAGES}, got {self.stage!r}"),
            (self.kd in KD_VARIANTS, f"kd must be one of {KD_VARIANTS}, got {self.kd!r}{did_you_mean(self.kd, KD_VARIANTS)}"),
            (self.stage == "student" or self.kd == "none", "a teacher is trained without --kd"),
            (self.occlusion_mode in noise.MODES, f"occlusion mode must be one of {noise.MODES}"),
            (self.occlusion_draws in ("fixed", "fresh"), "occlusion draws must be fixed or fresh"),
            (self.occlusion_channels in noise.CHANNELS, f"occlusion channels must be one of {noise.CHANNELS}"),
            (1 <= self.occlusion_block <= 100_000, f"occlusion_block must lie in [1, 100000], got {self.occlusion_block}"),
            (self.init in INITS, f"init must be one of {INITS}, got {self.init!r}"),
            (self.projection in PROJECTIONS, f"projection must be {' or '.join(PROJECTIONS)}, got {self.projection!r}"),
            (self.pe_gcn_score in PE_GCN_SCORES, f"pe_gcn_score must be cosine or bilinear, got {self.pe_gcn_score!r}"),
            (self.stage == "student" or self.init == "random", "a teacher starts from random weights"),
            (self.teacher_features in ("cached", "online"), "teacher features: cached or online"),
            (0.0 <= self.op <= 1.0, f"op must lie in [0, 1], got {self.op}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.tau > 0, f"tau must be > 0, got {self.tau}"),
            (self.alpha >= 0 and self.w >= 0, f"alpha and w must be >= 0, got {self.alpha} and {self.w}"),
            (self.backbone in BACKBONES, f"backbone must be one of {BACKBONES}, got {self.backbone!r}"),
            (self.hq_topup >= 0, "hq_topup must be >= 0"),
            (self.alpha_warmup >= 0, "alpha_warmup must be >= 0"),
            (self.lq_data in ("all", "pair"), f"lq_data must be all or pair, got {self.lq_data!r}"),
            (self.part_pool in PART_POOLS, f"part_pool must be one of {PART_POOLS}, got {self.part_pool!r}"),
            (0.0 <= self.part_dropout <= 1.0, f"part_dropout must lie in [0, 1], got {self.part_dropout}"),
            (self.max_steps >= 0, f"max_steps must be >= 0, got {self.max_steps}"),
        ]
        for ok, message in checks:
            if not ok:
                raise SkelpipeError(f"training config: {message}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """A config from a dict (a pipeline section); unknown keys are an error."""
        check_known("training config", cls, d)
        return cls(**d)

    def key(self, **inputs) -> str:
        """Short hash of the settings that define the result, plus the keys of the inputs."""
        blob = json.dumps({"config": settings(self.to_dict()), "inputs": inputs}, sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def settings(config: dict) -> dict:
    """The settings of a config dict that define the result (JSON-normalised): runtime-only
    fields left out, the distillation settings of a run without distillation, and the occlusion
    settings of a run at OP 0 (so the clean cells are shared by every reading of occlusion)."""
    drop = RUNTIME_FIELDS + (KD_FIELDS if config.get("kd", "none") == "none" else ())
    drop += OCCLUSION_FIELDS if config.get("op", 0.0) == 0 else ()
    drop += tuple(k for k, default in LATER_FIELDS.items() if config.get(k, default) == default)
    return json.loads(json.dumps({k: v for k, v in config.items() if k not in drop}, default=list))
