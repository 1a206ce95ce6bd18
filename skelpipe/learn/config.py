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
from skelpipe.core.fields import MAX_BATCH, MAX_SEED, bounded, check_known, check_ranges, check_types
from skelpipe.learn.models import BACKBONES, DEFAULT_CHANNELS
from skelpipe.learn.models.stgcn import PART_POOLS
from skelpipe.skeleton import noise

STAGES = ("teacher", "student")
KD_VARIANTS = ("none", "kl", "global-msc", "pmsc")
INITS = ("random", "teacher")
PROJECTIONS = ("none", "linear")

# Settings that only the distillation term reads: a student without KD ignores them.
KD_FIELDS = ("alpha", "alpha_warmup", "w", "tau", "kl_temperature", "hq_topup", "part_pool", "projection")

# Settings that only the occlusion reads: a run at OP 0 ignores them.
OCCLUSION_FIELDS = ("occlusion_mode", "occlusion_draws", "occlusion_seed", "occlusion_channels",
                    "occlusion_block")

# Settings that change how fast a run goes, not what it computes; left out of the config key.
RUNTIME_FIELDS = ("device", "compile", "eval_every", "teacher_features", "deterministic",
                  "eval_batch_size")

# Settings whose default reproduces what a cache key meant without them: in the key only away from
# that default, so that finished entries stay valid and are reused.
LATER_FIELDS = {"max_steps": 0, "occlusion_channels": "all", "occlusion_block": 15, "init": "random",
                "projection": "none"}


@dataclass
class TrainConfig:
    """Every setting of a training run; the paper's values are the defaults (docs/method.md, §Training schedule and defaults)."""

    stage: str = "teacher"                 # teacher | student
    kd: str = "none"                       # student distillation: none | kl | global-msc | pmsc
    backbone: str = "stgcn"
    channels: tuple = bounded(DEFAULT_CHANNELS, 1, 4096, length=(1, 32))
    temporal_kernel: int = bounded(9, 1, 99)     # odd: the padding keeps the sequence's length
    dropout: float = bounded(0.0, 0.0, 1.0)
    part_pool: str = "mean"                # part features over the person slots: mean | present
    part_dropout: float = bounded(0.0, 0.0, 1.0)  # probability of zeroing one random body part of a training input
    epochs: int = bounded(60, 1, 100_000)
    batch_size: int = bounded(64, 1, MAX_BATCH)    # global batch (split over the ranks under DDP)
    lr: float = bounded(0.1, high=1e3, above=0.0)
    momentum: float = bounded(0.9, 0.0, 1.0)
    weight_decay: float = bounded(1e-4, 0.0, 1.0)
    milestones: tuple = bounded((30, 40, 50), 1, 100_000, length=(0, 100))
    gamma: float = bounded(0.1, high=1.0, above=0.0)
    alpha: float = bounded(1.0, 0.0, 1e3)        # weight of the distillation term
    alpha_warmup: int = bounded(0, 0, 100_000)   # > 0: alpha ramps up linearly over this many epochs
    w: float = bounded(0.5, 0.0, 1e3)            # weight of the positives in the MSC losses
    tau: float = bounded(1.0, high=1e3, above=0.0)  # temperature of the MSC losses
    kl_temperature: float = bounded(1.0, high=1e3, above=0.0)  # temperature of the KL baseline
    hq_topup: int = bounded(0, 0, MAX_BATCH)      # extra D_pair HQ instances added to every B_H
    projection: str = "none"               # pmsc only: none | linear (a learned map per part, student → teacher channels)
    lq_data: str = "all"                   # student's LQ data: all (D_pair ∪ D_sol) | pair (D_pair)
    op: float = bounded(0.0, 0.0, 1.0)           # occlusion probability of the LQ input (student)
    occlusion_mode: str = "track"          # track | joint | block
    occlusion_channels: str = "all"        # all: an occluded joint loses every channel; xy: x and y only
    occlusion_block: int = bounded(15, 1, 100_000)  # block mode: frames (of the packed sequence) per block
    occlusion_draws: str = "fixed"         # fixed: one draw per instance; fresh: new every epoch
    occlusion_seed: int = bounded(0, 0, MAX_SEED)  # the training masks' seed (seed leaves them alone)
    seed: int = bounded(0, 0, MAX_SEED)          # initialisation and data order
    init: str = "random"                   # student start: random | teacher (every tensor whose name and shape match)
    amp: bool = True                       # bf16 autocast where native (CUDA; a CPU with AMX or AVX512-BF16)
    device: str = "auto"
    compile: bool = False
    eval_every: int = bounded(0, 0, 100_000)     # test top-1/top-5 every N epochs (0: never)
    eval_batch_size: int = bounded(256, 1, MAX_BATCH)
    teacher_features: str = "cached"       # cached | online
    deterministic: bool = False            # deterministic kernels (slower on CUDA)
    max_steps: int = bounded(0, 0, 10**9)        # > 0: end every epoch after this many steps (benchmarks)

    def __post_init__(self):
        # types first, so that a bad --set is one line, not a TypeError
        check_types("training config", type(self), {f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        self.channels = tuple(self.channels)
        self.milestones = tuple(self.milestones)
        check_ranges("training config", self)
        checks = [
            (self.stage in STAGES, f"stage must be one of {STAGES}, got {self.stage!r}"),
            (self.kd in KD_VARIANTS, f"kd must be one of {KD_VARIANTS}, got {self.kd!r}{did_you_mean(self.kd, KD_VARIANTS)}"),
            (self.stage == "student" or self.kd == "none", "a teacher is trained without --kd"),
            (self.occlusion_mode in noise.MODES, f"occlusion mode must be one of {noise.MODES}"),
            (self.occlusion_draws in ("fixed", "fresh"), "occlusion draws must be fixed or fresh"),
            (self.occlusion_channels in noise.CHANNELS, f"occlusion channels must be one of {noise.CHANNELS}"),
            (self.init in INITS, f"init must be one of {INITS}, got {self.init!r}"),
            (self.projection in PROJECTIONS, f"projection must be {' or '.join(PROJECTIONS)}, got {self.projection!r}"),
            (self.stage == "student" or self.init == "random", "a teacher starts from random weights"),
            (self.teacher_features in ("cached", "online"), "teacher features: cached or online"),
            (self.backbone in BACKBONES, f"backbone must be one of {BACKBONES}, got {self.backbone!r}"),
            (self.lq_data in ("all", "pair"), f"lq_data must be all or pair, got {self.lq_data!r}"),
            (self.temporal_kernel % 2 == 1, f"temporal_kernel must be odd, got {self.temporal_kernel}"),
            (self.part_pool in PART_POOLS, f"part_pool must be one of {PART_POOLS}, got {self.part_pool!r}"),
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
