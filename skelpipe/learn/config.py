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

from skelpipe.core.errors import SkelpipeError
from skelpipe.core.fields import MAX_BATCH, MAX_SEED, bounded, check_known, check_ranges, check_types
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

# Settings whose default reproduces what a cache key meant without them: in the key only away from
# that default, so that finished entries stay valid and are reused.
LATER_FIELDS = {"max_steps": 0, "occlusion_channels": "all", "occlusion_block": 15, "init": "random",
                "projection": "none", "skd_revision": True,
                "pe_gcn_score": "cosine", "lr_warmup": 0}


@dataclass
class TrainConfig:
    """Every setting of a training run; the paper's values are the defaults (docs/method.md, §Training
    schedule and defaults). Each field's ``help`` is its ``skelpipe train`` option's help."""

    stage: str = bounded("teacher", choices=STAGES,
                         help="teacher (HQ, cross-entropy) or student (LQ + distillation).")
    kd: str = bounded("none", choices=KD_VARIANTS, help="Student distillation term.")
    backbone: str = bounded("stgcn", choices=BACKBONES, help="The network.")
    channels: tuple = bounded(DEFAULT_CHANNELS, 1, 4096, length=(1, 32),
                              help="Channels of the blocks, comma-separated.")
    temporal_kernel: int = bounded(9, 1, 99,
                                   help="Temporal kernel size; odd, so that the padding keeps the sequence's length.")
    dropout: float = bounded(0.0, 0.0, 1.0, help="Dropout probability.")
    part_pool: str = bounded("mean", choices=PART_POOLS,
                             help="Part features over the person slots: all of them, or those with a skeleton.")
    part_dropout: float = bounded(0.0, 0.0, 1.0,
                                  help="Probability of zeroing one random body part of a training input.")
    epochs: int = bounded(60, 1, 100_000, help="Training epochs.")
    batch_size: int = bounded(64, 1, MAX_BATCH, help="Global batch size (split over the ranks under DDP).")
    lr: float = bounded(0.1, high=1e3, above=0.0, help="SGD's initial learning rate.")
    momentum: float = bounded(0.9, 0.0, 1.0, help="SGD's momentum.")
    weight_decay: float = bounded(1e-4, 0.0, 1.0, help="SGD's weight decay.")
    milestones: tuple = bounded((30, 40, 50), 1, 100_000, length=(0, 100),
                                help="Epochs where lr is multiplied by --gamma, comma-separated.")
    gamma: float = bounded(0.1, high=1.0, above=0.0, help="Factor of lr at each milestone.")
    lr_warmup: int = bounded(0, 0, 100_000, help="Epochs over which lr ramps up linearly from lr / n "
                             "(0: none; ResGCN's and EfficientGCN's authors warm up).")
    alpha: float = bounded(1.0, 0.0, 1e3, help="Weight of the distillation term.")
    alpha_warmup: int = bounded(0, 0, 100_000, help="Epochs over which alpha ramps up linearly (0: none).")
    w: float = bounded(0.5, 0.0, 1e3, help="Weight of the positives in the MSC losses.")
    tau: float = bounded(1.0, high=1e3, above=0.0, help="Temperature of the MSC losses.")
    kl_temperature: float = bounded(1.0, high=1e3, above=0.0, help="Temperature of the KL baseline.")
    hq_topup: int = bounded(0, 0, MAX_BATCH, help="Extra D_pair HQ instances added to every HQ batch.")
    skd_revision: bool = bounded(True, help="SKD only: revise each term's gradient against the cross-entropy's.")
    pe_gcn_score: str = bounded("cosine", choices=PE_GCN_SCORES,
                                help="PE-GCN only: cosine (of W g_L and g_H, / tau) or bilinear (CPC's g_H · W g_L).")
    projection: str = bounded("none", choices=PROJECTIONS,
                              help="PMSC: a learned linear map per part from the student's features to the teacher's.")
    lq_data: str = bounded("all", choices=("all", "pair"),
                           help="Student's LQ data: D_pair ∪ D_sol, or D_pair only.")
    op: float = bounded(0.0, 0.0, 1.0, help="Occlusion probability of the LQ input (student).")
    occlusion_mode: str = bounded("track", choices=noise.MODES, help="What one occlusion hides.")
    occlusion_channels: str = bounded("all", choices=noise.CHANNELS,
                                      help="What an occluded joint loses: every channel, or x and y only.")
    occlusion_block: int = bounded(15, 1, 100_000,
                                   help="Block mode: frames (of the packed sequence) per block.")
    occlusion_draws: str = bounded("fixed", choices=("fixed", "fresh"),
                                   help="Training masks: one draw per instance, or new every epoch.")
    occlusion_seed: int = bounded(0, 0, MAX_SEED,
                                  help="Seed of the training occlusion masks (--seed leaves them alone).")
    seed: int = bounded(0, 0, MAX_SEED, help="Seed of the initialisation and the data order.")
    init: str = bounded("random", choices=INITS,
                        help="Student start: random, or the teacher's weights where name and shape match.")
    amp: bool = bounded(True,
                        help="bf16 autocast where the device has it natively (CUDA; a CPU with AMX or AVX512-BF16).")
    device: str = bounded("auto", help="auto, cpu, cuda or cuda:<i>.")
    compile: bool = bounded(False, help="torch.compile the model.")
    eval_every: int = bounded(0, 0, 100_000, help="Test top-1/top-5 every N epochs (0: never).")
    eval_batch_size: int = bounded(256, 1, MAX_BATCH, help="Batch size of those tests.")
    teacher_features: str = bounded("cached", choices=("cached", "online"),
                                    help="The teacher's features for distillation: computed once, or on every batch.")
    deterministic: bool = bounded(False, help="Deterministic kernels (slower on CUDA).")
    max_steps: int = bounded(0, 0, 10**9,
                             help="End every epoch after this many steps (0: no limit; benchmarks).")

    def __post_init__(self):
        # types first, so that a bad --set is one line, not a TypeError
        check_types("training config", type(self), {f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        self.channels = tuple(self.channels)
        self.milestones = tuple(self.milestones)
        check_ranges("training config", self)  # ranges and choices
        checks = [
            (self.stage == "student" or self.kd == "none", "a teacher is trained without --kd"),
            (self.stage == "student" or self.init == "random", "a teacher starts from random weights"),
            (self.temporal_kernel % 2 == 1, f"temporal_kernel must be odd, got {self.temporal_kernel}"),
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
