"""Statistics over seeds: mean ± sd of a cell, and the paired difference of two cells with its
confidence interval.

A result on one seed is one draw: students trained from other initialisations and data orders
on the same data can differ by many points. Every cell of a table is therefore trained once per
seed, and a distillation gain is the **paired** difference — student with KD minus student
without, same seed, same data, same test draw — averaged over seeds, with a Student-t interval
over the seeds (n − 1 degrees of freedom). A gain whose interval contains 0 is not significant.
"""

import numpy as np
from scipy import stats


def summary(values) -> dict:
    """``{"mean", "sd", "n"}`` of a list of numbers; ``sd`` (n − 1 in the denominator) is None for n < 2."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("summary of no values")
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else None, "n": int(v.size)}


def paired_difference(a, b, level: float = 0.95) -> dict:
    """Mean of ``a[i] - b[i]`` with its ``level`` Student-t interval over the pairs.

    Returns ``{"mean", "sd", "n", "ci": [lo, hi] or None, "level", "significant": bool or None}``;
    with fewer than two pairs there is no interval and significance is None (unknown). A zero
    spread gives a zero-width interval.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired_difference needs two equal-length non-empty lists, got {a.shape} and {b.shape}")
    d = a - b
    out = {**summary(d), "ci": None, "level": level, "significant": None}
    if d.size > 1:
        half = float(stats.t.ppf(0.5 + level / 2, d.size - 1) * out["sd"] / np.sqrt(d.size))
        out["ci"] = [out["mean"] - half, out["mean"] + half]
        out["significant"] = bool(out["ci"][0] > 0 or out["ci"][1] < 0)
    return out


def binomial_se(accuracy: float, n: int) -> float:
    """Standard error of an accuracy (a fraction in [0, 1]) measured on ``n`` test instances."""
    return float(np.sqrt(max(accuracy * (1 - accuracy), 0.0) / max(n, 1)))
