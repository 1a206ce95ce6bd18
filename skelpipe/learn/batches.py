"""The batches of an epoch: the instance order of each rank, and the HQ batch ``B_H`` that goes
with each LQ batch of a student (docs/method.md, §D_pair and D_sol).

Both are pure functions of (seed, epoch, rank), so a resumed run sees the batches an
uninterrupted one would have.
"""

import numpy as np
import torch


def epoch_order(n: int, seed: int, epoch: int, rank: int, world: int) -> np.ndarray:
    """This rank's instance order for an epoch: a permutation seeded by (seed, epoch), padded
    to a multiple of ``world`` and dealt round robin (DistributedSampler's scheme)."""
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))
    order = torch.randperm(n, generator=g).numpy()
    pad = (-n) % world
    order = np.concatenate([order, order[:pad]])
    return order[rank::world]


def hq_batch(idx, has_hq, pair_pool, topup, rng):
    """The HQ batch of an LQ batch: (hq indices, pair_index), both numpy.

    ``B_H`` = the paired instances of ``idx`` in batch order, then ``topup`` extra ``D_pair``
    instances that are not in the LQ batch; ``pair_index[i]`` = position of i's counterpart in
    ``B_H`` or -1.
    """
    paired = has_hq[idx]
    hq_idx = idx[paired]
    pair_index = np.where(paired, np.cumsum(paired) - 1, -1)
    if topup:
        candidates = pair_pool[rng.permutation(len(pair_pool))[: topup + len(idx)]]
        extra = candidates[~np.isin(candidates, idx)][:topup]
        hq_idx = np.concatenate([hq_idx, extra])
    return hq_idx, pair_index


def epoch_plan(order, batch, has_hq, pair_pool, topup, rng):
    """``hq_batch`` for every batch of an epoch, concatenated: (HQ indices, pair_index aligned
    with ``order``, offsets of each batch's HQ indices)."""
    hq, pairs, offsets = [], [], [0]
    for start in range(0, len(order), batch):
        hq_idx, pair_index = hq_batch(order[start:start + batch], has_hq, pair_pool, topup, rng)
        hq.append(hq_idx)
        pairs.append(pair_index)
        offsets.append(offsets[-1] + len(hq_idx))
    return np.concatenate(hq).astype(np.int64), np.concatenate(pairs).astype(np.int64), offsets


def part_dropout_mask(part_keep: torch.Tensor, n: int, p: float, device) -> torch.Tensor:
    """(n, 1, 1, V, 1) keep-mask: with probability ``p`` an instance loses one body part drawn
    uniformly (all its joints, frames, persons and channels), as the part matrix occludes it; so
    a teacher trained with it has seen occluded parts and E measures reliance, not surprise."""
    drop = torch.rand(n, device=device) < p
    part = torch.randint(len(part_keep), (n,), device=device)
    keep = torch.where(drop[:, None], part_keep[part], torch.ones_like(part_keep[part]))
    return keep[:, None, None, :, None]
