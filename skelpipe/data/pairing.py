"""D_pair / D_sol: which training instances keep their HQ skeletons (docs/method.md, §D_pair and D_sol).

The HQ fraction (paper: 1.0, 0.8, 0.7) is applied per class: of the n_c instances of class c
that have an HQ skeleton, ``round(fraction * n_c)`` keep it (D_pair) and the others become
solitary (D_sol, LQ only). Which ones is a seeded draw; each class has its own random stream
(seeded by (seed, class)), so a class's draw does not depend on the other classes.
"""

import numpy as np


def draw_pairs(labels, fraction: float, seed: int = 0, available=None) -> np.ndarray:
    """Bool (N,): True = the instance is in D_pair (keeps its HQ), False = D_sol.

    ``labels`` (N,) ints; ``available`` (N,) bool, False for instances that have no HQ at all
    (never paired; they do not count in n_c).
    """
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"HQ fraction must lie in [0, 1], got {fraction}")
    available = (np.ones(len(labels), bool) if available is None
                 else np.asarray(available, dtype=bool).reshape(-1))
    if available.shape != labels.shape:
        raise ValueError(f"{len(available)} availability flags for {len(labels)} labels")
    has_hq = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        members = np.flatnonzero((labels == c) & available)
        keep = int(np.floor(fraction * len(members) + 0.5))  # round half up, not to even
        rng = np.random.default_rng([int(seed), int(c)])
        has_hq[rng.permutation(members)[:keep]] = True
    return has_hq
