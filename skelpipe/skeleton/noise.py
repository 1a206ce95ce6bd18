"""Occlusion noise (OP): zero joints of LQ skeletons with probability p, reproducibly.

A mask is a pure function of (instance seed, person, joint[, frame]): every random number is
a counter-based hash (splitmix64) of those integers, computed in int64 on the tensor's device.
So a batch of masks is made in a few vectorised operations, with no Python loop over
instances, and an instance's mask is the same on CPU and GPU, in any batch, at any T.

Modes (docs/method.md, §Occlusion noise; each keeps the expected occluded fraction of joint-frames equal to p):

- ``track`` (default): each (joint, person) is zeroed over the whole sequence with probability p.
- ``joint``: each (frame, joint, person) independently with probability p.
- ``block``: per (joint, person) time is cut into blocks of ``block_len`` frames (with a random
  phase per joint and person, so blocks do not line up across joints), and each block is zeroed
  with probability p. Every frame lies in exactly one block, hence an expected fraction of p.

Channels (``occlude_batch``): ``all`` (default) zeroes every channel of an occluded joint,
confidence included; ``xy`` zeroes only its first two channels (a 2D skeleton's x and y; its
confidence stays, so the network is told where a joint was lost, as a real estimator's
confidence would). Zero is the pack's origin: the image centre for 2D, the body centre for 3D.
Padding stays zero because the mask is applied by multiplication.

Draws: a mask follows its sample, never its position. Its seed is a hash of (occlusion seed,
purpose, split, sample id[, epoch]) — ``instance_seeds(seed, sample_keys(ids), purpose, split)``
— with ``purpose`` ``"train"`` (the masks a student trains on) or ``"eval"`` (the fixed test
draw). Purpose and split are separate hash streams, so no choice of seeds can make a test mask
the copy of a training mask (with the sorted ids of two splits, seeding by index made test
instance i and training instance i — same class — share their mask whenever the two seeds were
equal: a leak, since a fixed mask is a fingerprint). Test data always use one fixed draw per
instance. Training uses one too by default (``fixed``: the same degraded copy of the data set
every epoch, as the paper's "synthesized low-quality skeletons" reads), or mixes the epoch in
(``fresh``: a new mask every epoch, i.e. augmentation).
"""

import hashlib

import numpy as np
import torch

MODES = ("track", "joint", "block")
CHANNELS = ("all", "xy")
PURPOSES = ("train", "eval")

_BITS = 24  # uniform numbers are 24-bit integers; p is compared as an integer threshold
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_SALT = {"track": 0x7472616B, "joint": 0x6A6F696E, "block": 0x626C6F63, "phase": 0x70686173,
         "instance": 0x696E7374, "epoch": 0x65706F63}


def _i64(c: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits."""
    return c - (1 << 64) if c >= (1 << 63) else c


def _srl(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64 finaliser on int64 tensors (wrapping arithmetic, identical on every device)."""
    x = x + _i64(_GOLDEN)
    x = (x ^ _srl(x, 30)) * _i64(_M1)
    x = (x ^ _srl(x, 27)) * _i64(_M2)
    return x ^ _srl(x, 31)


def _bits(x: torch.Tensor) -> torch.Tensor:
    """The top 24 bits of a hash, as uniform integers in [0, 2**24)."""
    return _srl(x, 64 - _BITS)


def _as_seeds(seeds, device) -> torch.Tensor:
    if isinstance(seeds, torch.Tensor):
        return seeds.to(device=device, dtype=torch.int64).reshape(-1)
    arr = np.asarray(seeds)
    if arr.dtype == np.uint64:
        arr = arr.view(np.int64)
    return torch.as_tensor(np.ascontiguousarray(arr, dtype=np.int64), device=device).reshape(-1)


def _text_key(text: str) -> int:
    """A 64-bit int64 key of a string (blake2b): stable across runs, machines and Python versions."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little", signed=True)


def sample_keys(ids) -> np.ndarray:
    """(N,) int64: one key per sample id, so that a sample's mask does not depend on its position."""
    return np.fromiter((_text_key(str(i)) for i in ids), dtype=np.int64, count=len(ids))


def instance_seeds(seed: int, keys, purpose: str, split: str, epoch: int | None = None,
                   device=None) -> torch.Tensor:
    """One mask seed per instance: a hash of (seed, purpose, split, key[, epoch]) → int64 (N,).

    ``keys``: ``sample_keys(ids)`` of the instances (or any int64 keys). ``purpose``: ``"train"``
    (a student's training masks) or ``"eval"`` (the fixed test draw); with ``split`` it selects
    an independent stream. ``epoch``: None for a fixed draw, the epoch for fresh draws.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r}; known: {', '.join(PURPOSES)}")
    keys = _as_seeds(keys, device)
    stream = _mix(torch.full_like(keys, _i64(int(seed) % (1 << 64))) ^ _SALT["instance"])
    stream = _mix(stream + _text_key(f"{purpose}/{split}"))
    h = _mix(stream + keys)
    if epoch is not None:
        h = _mix(h ^ _mix(torch.full_like(h, int(epoch)) ^ _SALT["epoch"]))
    return h


def test_seeds(seed: int, ids, split: str, device=None) -> torch.Tensor:
    """The fixed evaluation draw of the samples ``ids`` of a split:
    ``instance_seeds(seed, sample_keys(ids), "eval", split)``."""
    return instance_seeds(seed, sample_keys(ids), "eval", split, device=device)


def occlusion_mask(seeds, p: float, shape=(300, 25, 2), mode: str = "track", device=None,
                   lengths=None, block_len: int = 15) -> torch.Tensor:
    """Keep-masks for a batch: torch.bool (N, 1, T, V, M), True = keep, one per seed.

    ``seeds`` (N,) int64 (tensor or array); ``shape`` = (T, V, M). With ``lengths`` (N,),
    frames at or beyond an instance's length are False (padding: nothing to keep). Apply as
    ``x * mask``.
    """
    if mode not in MODES:
        raise ValueError(f"unknown occlusion mode {mode!r}; known: {', '.join(MODES)}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"occlusion probability must lie in [0, 1], got {p}")
    if device is None and isinstance(seeds, torch.Tensor):
        device = seeds.device
    s = _as_seeds(seeds, device)
    n = s.numel()
    T, V, M = (int(d) for d in shape)
    threshold = int(round(p * (1 << _BITS)))  # occlude where bits < threshold: P = p
    dev = s.device
    # (person, joint) counter, independent of V, M and T so a mask does not change with padding.
    pv = (torch.arange(M, device=dev).view(1, 1, M) * 4096 + torch.arange(V, device=dev).view(1, V, 1))
    key = _mix(_mix(s.view(n, 1, 1) ^ _SALT[mode]) + pv)  # (N, V, M)
    if mode == "track":
        keep = (_bits(key) >= threshold).view(n, 1, 1, V, M).expand(n, 1, T, V, M)
    else:
        t = torch.arange(T, device=dev).view(1, T, 1, 1)
        if mode == "joint":
            counter = t
        else:
            if block_len < 1:
                raise ValueError(f"block_len must be >= 1, got {block_len}")
            phase = _srl(_mix(key ^ _SALT["phase"]), 33) % block_len  # (N, V, M)
            counter = torch.div(t + phase.view(n, 1, V, M), block_len, rounding_mode="floor")
        keep = (_bits(_mix(key.view(n, 1, V, M) + counter)) >= threshold).view(n, 1, T, V, M)
    if lengths is not None:
        lengths = torch.as_tensor(np.asarray(lengths) if not isinstance(lengths, torch.Tensor)
                                  else lengths, device=dev).view(n, 1, 1, 1, 1)
        keep = keep & (torch.arange(T, device=dev).view(1, 1, T, 1, 1) < lengths)
    return keep.contiguous()


def occlude_batch(x: torch.Tensor, seeds, p: float, mode: str = "track", channels: str = "all",
                  block_len: int = 15) -> torch.Tensor:
    """A batch ``x`` (N, C, T, V, M) occluded with one mask per instance seed (``seeds`` (N,)):
    every channel of an occluded joint zeroed (``channels="all"``), or only x and y (``"xy"``)."""
    if channels not in CHANNELS:
        raise ValueError(f"unknown occlusion channels {channels!r}; known: {', '.join(CHANNELS)}")
    keep = occlusion_mask(seeds, p, x.shape[2:], mode, device=x.device, block_len=block_len).to(x.dtype)
    if channels == "xy" and x.shape[1] > 2:
        return torch.cat([x[:, :2] * keep, x[:, 2:]], 1)
    return x * keep


def occlude(x, p: float, seed, mode: str = "track", block_len: int = 15, channels: str = "all"):
    """``x`` (..., C, T, V, M) tensor or array with joints zeroed (``occlude_batch`` over the
    leading dimensions); the same type comes back.

    ``seed``: an int, or one seed per instance of the leading dimensions. An int seed on a
    batch gives instance i the seed ``instance_seeds(seed, i, "eval", "index")`` (positional:
    for ad-hoc use; data sets go through ``sample_keys``); for a single instance (x of 4 dims)
    the int is the instance's seed itself.
    """
    is_numpy = not isinstance(x, torch.Tensor)
    t = torch.as_tensor(x) if is_numpy else x
    if t.dim() < 4:
        raise ValueError(f"occlude expects (..., C, T, V, M), got shape {tuple(t.shape)}")
    lead = t.shape[:-4]
    n = int(np.prod(lead)) if lead else 1
    if np.ndim(seed) == 0 and not (isinstance(seed, torch.Tensor) and seed.numel() > 1):
        seed = int(seed)
        seeds = (torch.tensor([seed], dtype=torch.int64, device=t.device) if not lead
                 else instance_seeds(seed, torch.arange(n, device=t.device), "eval", "index"))
    else:
        seeds = _as_seeds(seed, t.device)
        if seeds.numel() != n:
            raise ValueError(f"occlude got {seeds.numel()} seeds for {n} instances")
    out = occlude_batch(t.reshape(n, *t.shape[-4:]), seeds, p, mode, channels, block_len).reshape(t.shape)
    return out.numpy() if is_numpy else out
