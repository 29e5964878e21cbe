"""Which units track which feature, and whether that beats chance.

For every unit's ``c`` or ``h`` and every feature: the Pearson correlation, and the
held-out R² of a linear probe reading the feature from that one unit; for every quantity,
the held-out R² of a ridge probe reading it from all units at once. Probes are fitted on
contiguous folds in time and scored on the held-out fold (pooled out-of-fold predictions
against the feature's mean), so a probe that merely memorises a stretch of the data scores
nothing.

Chance is measured, not assumed: the feature is circularly shifted by random offsets many
times (which keeps its autocorrelation: a slow feature correlates with slow units by luck
far more often than white noise would), and every number is recomputed on each shift.
``chance_*`` is the ``chance_quantile`` (0.99) of those shifted values; ``p_value`` the
fraction of shifts that matched or beat the real feature (with the usual +1 on both sides).
``chance_r_max`` is the quantile of the *largest* |r| over all units of the quantity on each
shift: the bar the best of ``H`` units must clear when you pick the best one.

A periodic feature (a seasonal phase) is where this baseline goes blind: shifted by a whole
period it is itself, by any other offset the same season at another phase, so against
periodic states its chance level sits near the real score. That says "any phase would do",
not "no season"; judge such a feature by the all-units R² itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from clearlstm.core.records import LayerRecord
from clearlstm.core.trace import Trace


@dataclass(frozen=True)
class UnitScore:
    """How well one unit's ``quantity`` (``"c"`` or ``"h"``) tracks one feature."""

    feature: str
    quantity: str
    unit: int
    steps: int  # steps used (finite feature and states)
    r: float  # Pearson correlation
    chance_r: float  # quantile of |r| over shifted features
    chance_r_max: float  # quantile over shifts of the largest |r| of any unit
    p_value: float  # fraction of shifts with |r| at least as large
    probe_r2: float  # held-out R² of feature ~ a + b * unit
    chance_probe_r2: float
    probe_p_value: float
    all_units_r2: float  # held-out R² of the ridge probe from every unit of `quantity`
    chance_all_units_r2: float


@dataclass(frozen=True)
class ProbeScore:
    """How well all units of one quantity together predict one feature (ridge probe)."""

    feature: str
    quantity: str
    units: int
    steps: int
    r2: float
    chance_r2: float
    p_value: float


def _matrix(name: str, values: object) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"rank_units: states[{name!r}] must be (T, H); got shape {array.shape}")
    return array


def states_from_trace(
    source: Trace | LayerRecord, layer: int = -1, direction: int = 0
) -> dict[str, np.ndarray]:
    """``{"c": (N, H), "h": (N, P)}``: every valid step of every sequence, one after another
    (sequence 0's steps first), ready for :func:`rank_units`."""
    record = source[layer, direction] if isinstance(source, Trace) else source
    out = {}
    for name in ("c", "h"):
        value = getattr(record, name).double().transpose(0, 1)  # (B, T, H)
        valid = ~torch.isnan(value).any(dim=-1)
        out[name] = value[valid].numpy()
    return out


def _check(states: Mapping[str, object], features: Mapping[str, object], folds: int):
    if not states or not isinstance(states, Mapping):
        raise ValueError(
            f"rank_units: states must be a dict like {{'c': (T, H)}}; got {states!r:.60}"
        )
    if not features or not isinstance(features, Mapping):
        raise ValueError(f"rank_units: features must be a dict name -> (T,); got {features!r:.60}")
    mats = {name: _matrix(name, v) for name, v in states.items()}
    steps = {m.shape[0] for m in mats.values()}
    if len(steps) != 1:
        raise ValueError(f"rank_units: every state must have the same steps; got {sorted(steps)}")
    (t,) = steps
    cols = {}
    for name, values in features.items():
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().double().numpy()
        col = np.asarray(values, dtype=np.float64)
        if col.shape != (t,):
            raise ValueError(
                f"rank_units: feature {name!r} must have shape ({t},) like the states; "
                f"got {col.shape}"
            )
        cols[name] = col
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"rank_units: folds must be an int of at least 2; got {folds!r}")
    return mats, cols


def _shifted(y: np.ndarray, shifts: int, rng: np.random.Generator) -> np.ndarray:
    """``(1 + shifts, N)``: ``y`` itself, then circular shifts by offsets away from zero."""
    n = len(y)
    low = max(1, n // 20)
    offsets = rng.integers(low, n - low + 1, size=shifts) if n > 2 * low else np.ones(shifts)
    index = (np.arange(n)[None, :] - offsets.astype(np.int64)[:, None]) % n
    return np.concatenate([y[None, :], y[index]])


def _blocks(n: int, folds: int) -> list[slice]:
    """Contiguous folds in time, as slices (views, no copies)."""
    edges = np.linspace(0, n, folds + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def _r2(sse: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """``1 - SSE / SST`` per row of ``ys`` (SST about its mean); NaN for a constant row."""
    sst = (ys**2).sum(1) - ys.sum(1) ** 2 / ys.shape[1]  # (S,)
    sst = sst.reshape(sst.shape + (1,) * (sse.ndim - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sst > 1e-12 * (ys**2).sum(1).max(initial=0), 1 - sse / sst, np.nan)


def _single_probe(
    x: np.ndarray, ys: np.ndarray, sxy: np.ndarray, blocks: list[slice]
) -> np.ndarray:
    """``(S, U)`` held-out R² of ``y ~ a + b x_u`` for every unit and every row of ``ys``,
    from per-fold sums (train sums are the total minus the fold's); ``sxy (K, S, U)`` holds
    each fold's ``ys @ x``."""
    n_k = np.array([b.stop - b.start for b in blocks], dtype=np.float64)[:, None, None]
    sx = np.stack([x[b].sum(0) for b in blocks])[:, None, :]  # (K, 1, U)
    sxx = np.stack([(x[b] ** 2).sum(0) for b in blocks])[:, None, :]
    sy = np.stack([ys[:, b].sum(1) for b in blocks])[:, :, None]  # (K, S, 1)
    syy = np.stack([(ys[:, b] ** 2).sum(1) for b in blocks])[:, :, None]
    n_t, sx_t, sxx_t = n_k.sum(0) - n_k, sx.sum(0) - sx, sxx.sum(0) - sxx
    sy_t, sxy_t = sy.sum(0) - sy, sxy.sum(0) - sxy
    var = sxx_t - sx_t**2 / n_t
    cov = sxy_t - sx_t * sy_t / n_t
    scale = np.maximum(sxx_t, 1e-300)
    b = np.where(var > 1e-12 * scale, cov / np.where(var > 0, var, 1.0), 0.0)
    a = (sy_t - b * sx_t) / n_t
    sse = syy - 2 * a * sy - 2 * b * sxy + n_k * a**2 + 2 * a * b * sx + b**2 * sxx
    return _r2(sse.sum(0), ys)


def _all_probe(
    x: np.ndarray, ys: np.ndarray, sxy: np.ndarray, blocks: list[slice], ridge: float
) -> np.ndarray:
    """``(S,)`` held-out R² of a ridge probe from all columns of ``x`` (standardised), from
    per-fold cross products (train = total minus fold)."""
    scale = x.std(0)
    keep = scale > 0
    x = x[:, keep] / scale[keep]
    n = len(x)
    parts = [
        (x[b].T @ x[b], (sxy[k][:, keep] / scale[keep]).T, x[b].sum(0), ys[:, b].sum(1))
        for k, b in enumerate(blocks)
    ]
    xx, xy, sx, sy = (sum(p[k] for p in parts) for k in range(4))
    sse = np.zeros(ys.shape[0])
    for block, (bxx, bxy, bsx, bsy) in zip(blocks, parts, strict=True):
        m = n - (block.stop - block.start)
        xm, ym = (sx - bsx) / m, (sy - bsy) / m  # train means (U,), (S,)
        gram = (xx - bxx) - m * np.outer(xm, xm) + ridge * m * np.eye(x.shape[1])
        cross = (xy - bxy) - m * np.outer(xm, ym)  # (U, S) centred train cross products
        beta = np.linalg.solve(gram, cross)
        pred = ym[None, :] + (x[block] - xm) @ beta  # (n_k, S)
        sse += ((ys[:, block].T - pred) ** 2).sum(0)
    return _r2(sse, ys)


def _tail(null: np.ndarray, real: np.ndarray, quantile: float) -> tuple[np.ndarray, np.ndarray]:
    """Chance level (quantile over shifts, axis 0) and the +1-smoothed exceedance fraction."""
    level = np.quantile(null, quantile, axis=0)
    p = (1 + (null >= real[None] - 1e-12).sum(0)) / (1 + null.shape[0])
    return level, np.where(np.isnan(real), 1.0, p)  # an undefined score is no evidence


def _score_feature(
    name: str,
    y: np.ndarray,
    mats: dict[str, np.ndarray],
    folds: int,
    shifts: int,
    quantile: float,
    ridge: float,
    rng: np.random.Generator,
) -> tuple[list[UnitScore], list[ProbeScore]]:
    valid = np.isfinite(y)
    for m in mats.values():
        valid &= np.isfinite(m).all(1)
    n = int(valid.sum())
    if n < 2 * folds:
        raise ValueError(
            f"rank_units: feature {name!r} has {n} finite steps (with finite states); "
            f"{folds} folds need at least {2 * folds}"
        )
    ys = _shifted(y[valid] - y[valid].mean(), shifts, rng)  # (1 + S, N)
    blocks = _blocks(n, folds)
    y_std = ys[0].std()
    units, probes = [], []
    for quantity, mat in mats.items():
        x = mat[valid] - mat[valid].mean(0)
        x_std = x.std(0)
        sxy = np.stack([ys[:, b] @ x[b] for b in blocks])  # (K, 1 + S, U) per-fold products
        r = sxy.sum(0) / (n * np.where(x_std > 0, x_std, 1.0) * max(y_std, 1e-300))
        r = np.where(x_std > 0, r, 0.0) if y_std > 0 else np.zeros_like(r)  # (1 + S, U)
        chance_r, p_r = _tail(np.abs(r[1:]), np.abs(r[0]), quantile)
        chance_max = float(np.quantile(np.abs(r[1:]).max(1), quantile))
        probe = _single_probe(x, ys, sxy, blocks)  # (1 + S, U)
        chance_probe, p_probe = _tail(probe[1:], probe[0], quantile)
        both = _all_probe(x, ys, sxy, blocks, ridge)  # (1 + S,)
        chance_both, p_both = _tail(both[1:, None], both[:1], quantile)
        probes.append(
            ProbeScore(name, quantity, x.shape[1], n, float(both[0]), float(chance_both[0]),
                       float(p_both[0]))
        )  # fmt: skip
        for u in range(x.shape[1]):
            units.append(
                UnitScore(
                    name, quantity, u, n, float(r[0, u]), float(chance_r[u]), chance_max,
                    float(p_r[u]), float(probe[0, u]), float(chance_probe[u]),
                    float(p_probe[u]), float(both[0]), float(chance_both[0]),
                )
            )  # fmt: skip
    units.sort(key=lambda s: -abs(s.r))
    return units, probes


def _run(states, features, folds, seed, shifts, chance_quantile, ridge):
    mats, cols = _check(states, features, folds)
    if isinstance(shifts, bool) or not isinstance(shifts, int) or shifts < 1:
        raise ValueError(f"rank_units: shifts must be a positive int; got {shifts!r}")
    if not 0 < chance_quantile < 1:
        raise ValueError(f"rank_units: chance_quantile must be in (0, 1); got {chance_quantile}")
    rng = np.random.default_rng(seed)
    results = [
        _score_feature(name, y, mats, folds, shifts, chance_quantile, ridge, rng)
        for name, y in cols.items()
    ]
    return [u for units, _ in results for u in units], [p for _, ps in results for p in ps]


def rank_units(
    states: Mapping[str, object],
    features: Mapping[str, object],
    *,
    folds: int = 5,
    seed: int = 0,
    shifts: int = 200,
    chance_quantile: float = 0.99,
    ridge: float = 1e-3,
) -> list[UnitScore]:
    """Every (feature, quantity, unit), features in the order given, each feature's units
    by falling |r|.

    ``states``: ``{"c": (T, H), "h": (T, P)}`` (numpy or torch; any names), e.g. from
    :func:`states_from_trace`; ``features``: ``name -> (T,)``, NaN where undefined (those
    steps are left out for that feature). ``shifts`` circular shifts give the chance levels;
    ``seed`` fixes their offsets. ``ridge`` is the all-units probe's penalty per step on
    standardised units.
    """
    return _run(states, features, folds, seed, shifts, chance_quantile, ridge)[0]


def probe_all_units(
    states: Mapping[str, object],
    features: Mapping[str, object],
    *,
    folds: int = 5,
    seed: int = 0,
    shifts: int = 200,
    chance_quantile: float = 0.99,
    ridge: float = 1e-3,
) -> list[ProbeScore]:
    """The all-units probe alone, one score per (feature, quantity); arguments as
    :func:`rank_units` (the same ``seed`` gives the same chance levels)."""
    return _run(states, features, folds, seed, shifts, chance_quantile, ridge)[1]


def best_units(scores: list[UnitScore], top: int = 1) -> dict[str, list[UnitScore]]:
    """Each feature's ``top`` units by |r| (any quantity), in the features' order."""
    out: dict[str, list[UnitScore]] = {}
    for s in scores:
        chosen = out.setdefault(s.feature, [])
        if len(chosen) < top:
            chosen.append(s)
    return out


def beats_chance(score: UnitScore) -> bool:
    """Whether a unit picked as the best of its quantity beats chance: its |r| above
    ``chance_r_max`` (the bar for the best of ``H`` units) and the all-units probe's held-out
    R² above its own chance level and above 0."""
    return bool(
        abs(score.r) > score.chance_r_max
        and score.all_units_r2 > max(score.chance_all_units_r2, 0.0)
    )
