"""A gradient-boosted tree proxy of a masked model and its exact sparse Fourier spectrum.

Under feature masking a model is a set function ``f: {0,1}^n -> R`` (``True`` = feature kept),
written ``f(x) = sum_k F(k) (-1)^<x,k>``. A tree ensemble fitted on ``(masks, y)`` has a
spectrum that can be read off its structure exactly:

* a leaf reached when the features ``P`` on its path take the values ``b`` is the product of
  indicators ``prod_{i in P} [x_i = b_i]`` times its value ``v``, and
  ``[x_i = b_i] = (1 + (-1)^{b_i} (-1)^{x_i}) / 2``;
* expanding the product, the leaf puts ``v 2^-|P| (-1)^{|S ∩ {i: b_i = 1}|}`` on every subset
  ``S`` of ``P``. Node by node this is the rule "``(L+R)/2`` on frequencies without ``i``,
  ``(L-R)/2`` on frequencies with ``i``" for ``L`` the child taken when ``x_i = 0``.
* A feature tested again lower on the same path is already fixed there: only the branch its
  value leads to is followed (``[x_i = b]^2 = [x_i = b]``, the characters multiply to one), so
  ``P`` holds every feature once and a contradictory path is dropped.

The spectrum is the sum over leaves and trees. Which child a 0/1 value goes to is decided as
LightGBM's predictor does it (numerical ``<=`` thresholds, ``missing_type`` "Zero" sending
zeros to the default side, categorical ``==`` splits sending the listed categories left), so
the result matches ``Booster.predict(..., raw_score=True)`` on every mask.

LightGBM is optional: it is imported only inside :func:`fit_proxy` and
:func:`proxy_available`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations
from typing import Any

import numpy as np

from .conversions import canonicalise

__all__ = [
    "MIN_ROWS",
    "PROXY_MISSING",
    "ProxyFit",
    "evaluate_spectrum",
    "fit_proxy",
    "proxy_available",
    "strongest_terms",
    "tree_spectrum",
]

PROXY_MISSING = 'the tree proxy needs LightGBM: pip install "spex-plugins[proxy]"'
"""Message of the ImportError raised when LightGBM is not installed."""

MIN_ROWS = 20
"""Fewest rows :func:`fit_proxy` accepts (it still holds out a validation split)."""

_PAD = -1
_NOISE = 64 * np.finfo(np.float64).eps
"""A merged coefficient below this share of the sum of its contributions' magnitudes is a
rounding remainder of an exact cancellation and is dropped."""


def proxy_available() -> bool:
    """Whether LightGBM can be imported (the tree proxy needs it)."""
    try:
        import lightgbm  # noqa: F401
    except ImportError:
        return False
    return True


def _import_lightgbm() -> Any:
    try:
        import lightgbm
    except ImportError as exc:
        raise ImportError(PROXY_MISSING) from exc
    return lightgbm


# --------------------------------------------------------------------------------------------
# the exact spectrum of a fitted booster
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Trees:
    """A booster's trees as flat arrays over all its internal nodes and leaves.

    A child reference ``c >= 0`` is internal node ``c``; ``c < 0`` is leaf ``~c``.
    ``left_on[v, i]``: whether the 0/1 value ``v`` goes to the left child of node ``i``.
    """

    feature: np.ndarray  # (nodes,) int64
    left_on: np.ndarray  # (2, nodes) bool
    children: np.ndarray  # (2, nodes) int64: left, right
    roots: np.ndarray  # (trees,) int64 child references
    leaf_values: np.ndarray  # (leaves,) float64, scaled (1 / trees for an averaged forest)


def _numbers(fields: list[dict[str, str]], key: str, dtype: type) -> np.ndarray:
    """One field of every tree of a LightGBM model text, concatenated."""
    return np.array(" ".join(tree.get(key, "") for tree in fields).split(), dtype=dtype)


def _parse_trees(text: str, n: int) -> _Trees:
    """Read ``Booster.model_to_string()`` into :class:`_Trees`, checking it is single-output,
    has ``n`` features and no linear leaves.

    Routing follows LightGBM's predictor: a numerical node sends ``x <= threshold`` left,
    except that with missing type Zero (``decision_type`` bits 2-3 = 1) a zero goes to the
    default side (bit 1); a categorical node (bit 0) sends the categories set in its bitset
    (``cat_threshold`` words from ``cat_boundaries[threshold]``) left.
    """
    head, _, body = text.partition("\nTree=")
    header = dict(line.split("=", 1) for line in head.splitlines() if "=" in line)
    if int(header.get("num_tree_per_iteration", 1)) != 1:
        raise ValueError("tree_spectrum needs a single-output booster (one tree per iteration)")
    n_booster = int(header.get("max_feature_idx", n - 1)) + 1
    if n_booster != n:
        raise ValueError(f"the booster was trained on {n_booster} features but n = {n}")
    blocks = body.split("end of trees", 1)[0].split("\nTree=") if body else []
    fields = [dict(line.split("=", 1) for line in block.splitlines()[1:] if "=" in line)
              for block in blocks]
    for tree in fields:
        if tree.get("is_linear", "0") != "0" and any(
                int(k) for k in tree.get("num_features", "").split()):
            raise ValueError("linear trees (linear_tree=True) are not supported")
    leaves = np.array([int(tree["num_leaves"]) for tree in fields], dtype=np.int64)
    nodes = np.maximum(leaves - 1, 0)
    node_start = np.concatenate([[0], np.cumsum(nodes)[:-1]]).astype(np.int64)
    leaf_start = np.concatenate([[0], np.cumsum(leaves)[:-1]]).astype(np.int64)
    owner = np.repeat(np.arange(len(fields)), nodes)

    feature = _numbers(fields, "split_feature", np.int64)
    outside = (feature < 0) | (feature >= n)
    if outside.any():
        raise ValueError(f"the booster splits on feature {feature[outside][0]} but n = {n}")
    threshold = _numbers(fields, "threshold", np.float64)
    decision = _numbers(fields, "decision_type", np.int64)
    values = np.arange(2)[:, None]
    left_on = values <= threshold  # (2, nodes)
    zero_missing = ((decision >> 2) & 3) == 1
    left_on[0, zero_missing] = (decision[zero_missing] & 2) != 0
    for t in np.unique(owner[(decision & 1) != 0]):  # categorical nodes, tree by tree
        bounds = np.array(fields[t]["cat_boundaries"].split(), dtype=np.int64)
        words = np.array(fields[t]["cat_threshold"].split(), dtype=np.int64)
        at = np.flatnonzero((owner == t) & ((decision & 1) != 0))
        index = threshold[at].astype(np.int64)
        first = np.where(bounds[index + 1] > bounds[index], words[bounds[index]], 0)
        left_on[:, at] = ((first >> values) & 1) != 0
    children = np.stack([_numbers(fields, side, np.int64)
                         for side in ("left_child", "right_child")])
    children = np.where(children >= 0, children + node_start[owner],
                        ~(leaf_start[owner] + ~children))
    roots = np.where(leaves > 1, node_start, ~leaf_start)
    scale = 1.0 / len(fields) if "average_output" in head.splitlines() and fields else 1.0
    return _Trees(feature, left_on, children, roots,
                  _numbers(fields, "leaf_value", np.float64) * scale)


def _leaf_paths(trees: _Trees) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every reachable leaf of every tree with the 0/1 values its path requires.

    Returns ``leaf (L,)``, ``features (L, D)`` and ``bits (L, D)`` (the path's features in
    order and the value each must take; -1 and 0 beyond ``depth (L,)``). A feature tested
    again lower on a path is already fixed there: only the child its value leads to is
    followed. A child that no 0/1 value reaches is dropped; one that both reach adds no
    condition.
    """
    ref = trees.roots
    features = np.full((len(ref), 0), _PAD, dtype=np.int64)
    bits = np.zeros((len(ref), 0), dtype=np.int64)
    depth = np.zeros(len(ref), dtype=np.int64)
    done = [(ref[:0], features[:0], bits[:0], depth[:0])]  # (so that no trees give no leaves)
    while len(ref):
        at_leaf = ref < 0
        done.append((~ref[at_leaf], features[at_leaf], bits[at_leaf], depth[at_leaf]))
        ref, features, bits, depth = (a[~at_leaf] for a in (ref, features, bits, depth))
        if not len(ref):
            break
        feature = trees.feature[ref]
        hit = features == feature[:, None]
        fixed = hit.any(axis=1)
        value = (bits * hit).sum(axis=1)
        on0, on1 = trees.left_on[0, ref], trees.left_on[1, ref]
        split = ~fixed & (on0 != on1)  # the child adds the condition x_feature = bit
        features = np.pad(features, ((0, 0), (0, 1)), constant_values=_PAD)
        bits = np.pad(bits, ((0, 0), (0, 1)))
        goes_left = np.where(value == 1, on1, on0)  # where a fixed feature's value goes
        parts = []
        # a condition added on the left holds the value that goes left (on1 as 0/1), on the
        # right the other one
        for side, reached, bit in ((0, np.where(fixed, goes_left, on0 | on1), on1),
                                   (1, np.where(fixed, ~goes_left, ~(on0 & on1)), on0)):
            f, b, d = features[reached], bits[reached], depth[reached].copy()
            adds = split[reached]
            r = np.flatnonzero(reached)[adds]
            f[adds, d[adds]] = feature[r]
            b[adds, d[adds]] = bit[r]
            d[adds] += 1
            parts.append((trees.children[side, ref[reached]], f, b, d))
        ref, features, bits, depth = (np.concatenate(a) for a in zip(*parts, strict=True))
    width = max(a[1].shape[1] for a in done)
    leaf = np.concatenate([a[0] for a in done])
    features = np.concatenate([np.pad(a[1], ((0, 0), (0, width - a[1].shape[1])),
                                      constant_values=_PAD) for a in done])
    bits = np.concatenate([np.pad(a[2], ((0, 0), (0, width - a[2].shape[1]))) for a in done])
    return leaf, features, bits, np.concatenate([a[3] for a in done])


@lru_cache(maxsize=256)
def _subsets(size: int, max_degree: int) -> tuple[np.ndarray, ...]:
    """Per degree ``j <= min(size, max_degree)``: the (C(size, j), j) subsets of range(size)."""
    return tuple(
        np.array(list(combinations(range(size), j)), dtype=np.intp).reshape(math.comb(size, j), j)
        for j in range(min(size, max_degree) + 1)
    )


def _expand(
    features: np.ndarray, bits: np.ndarray, values: np.ndarray, max_degree: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Spread leaves with paths of one length over the subsets of their paths.

    Parameters
    ----------
    features : ndarray (L, p) int64
        Sorted path features of L leaves.
    bits : ndarray (L, p) int64
        The 0/1 value each path feature takes to reach the leaf.
    values : ndarray (L,) float64
        Leaf values (already scaled).
    max_degree : int
        Largest subset size spread to.
    width : int
        Columns of the returned locations.

    Returns
    -------
    locations : ndarray (r, width) int64
    contributions : ndarray (r,) float64
    """
    p = features.shape[1]
    scaled = values * 2.0**-p
    locs, vals = [], []
    for subset in _subsets(p, max_degree):
        j = subset.shape[1]
        loc = features[:, subset]  # (L, c, j)
        sign = 1.0 - 2.0 * (bits[:, subset].sum(axis=2) & 1)  # (L, c)
        block = np.full((loc.shape[0] * loc.shape[1], width), _PAD, dtype=np.int64)
        block[:, :j] = loc.reshape(block.shape[0], j)
        locs.append(block)
        vals.append((scaled[:, None] * sign).ravel())
    return np.concatenate(locs), np.concatenate(vals)


def _reduce(
    locs: np.ndarray, vals: np.ndarray, mags: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum contributions (and their magnitudes) of equal rows of ``locs``."""
    if locs.shape[0] == 0:
        return locs, vals, mags
    width = locs.shape[1]
    if width * math.log2(n + 1) < 62:  # one int64 key per row
        keys = np.zeros(locs.shape[0], dtype=np.int64)
        for col in range(width):
            keys = keys * (n + 1) + (locs[:, col] + 1)
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    else:
        _, first, inverse = np.unique(locs, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    size = first.shape[0]
    return (
        locs[first],
        np.bincount(inverse, weights=vals, minlength=size),
        np.bincount(inverse, weights=mags, minlength=size),
    )


def tree_spectrum(
    booster: Any, n: int, *, max_degree: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact Fourier spectrum of a fitted LightGBM booster over ``n`` boolean features.

    The spectrum is that of the raw score, ``booster.predict(masks, raw_score=True)`` (for a
    regression objective, of ``booster.predict``), summed over the trees LightGBM predicts with
    by default (up to the best iteration when early stopping set one). Masks enter as 0/1:
    ``x_i = 1`` (feature kept) and ``x_i = 0`` (masked) follow the splits exactly as
    LightGBM's predictor routes them, missing-value and categorical splits included.

    Parameters
    ----------
    booster : lightgbm.Booster
        A fitted single-output booster (a fitted scikit-learn wrapper is accepted too: its
        ``booster_`` is used) trained on ``n`` features. Linear trees are not supported.
    n : int
        Number of features; must equal the booster's number of features.
    max_degree : int or None, keyword-only
        Keep only frequencies with at most this many features (``None``: all). The kept
        coefficients are exact: truncation restricts the spectrum, it does not refit.

    Returns
    -------
    locations : ndarray (s, d) int64
        One frequency per row: its sorted feature indices padded on the right with ``-1``;
        the empty set is the all ``-1`` row. ``d`` is the largest degree present (at least 1).
        Rows are unique, ordered by degree, then lexicographically.
    values : ndarray (s,) float64
        ``F(k)`` per row; zero coefficients (exact cancellations) are dropped.

    Raises
    ------
    ValueError
        For a bad ``n`` or ``max_degree``, a multi-output booster, linear trees, or a split on
        a feature outside ``range(n)``.

    Notes
    -----
    Cost: every leaf spreads over the subsets of its path of size at most ``max_degree``,
    so ``O(leaves * 2^depth)`` terms; nothing of size ``2^n`` is built.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    n = int(n)
    if max_degree is not None and (
        isinstance(max_degree, bool) or not isinstance(max_degree, (int, np.integer))
        or max_degree < 0
    ):
        raise ValueError(f"max_degree must be a non-negative integer or None, got {max_degree!r}")
    booster = getattr(booster, "booster_", booster)
    trees = _parse_trees(booster.model_to_string(), n)
    leaf, features, bits, depth = _leaf_paths(trees)
    values = trees.leaf_values[leaf]
    nonzero = values != 0.0
    features, bits, depth, values = (a[nonzero] for a in (features, bits, depth, values))
    # each path's features in increasing order (the padding last)
    order = np.argsort(np.where(features < 0, n, features), axis=1, kind="stable")
    features = np.take_along_axis(features, order, axis=1)
    bits = np.take_along_axis(bits, order, axis=1)
    longest = int(depth.max(initial=0))
    limit = longest if max_degree is None else int(max_degree)
    width = max(1, min(longest, limit))

    locs = np.full((0, width), _PAD, dtype=np.int64)
    vals = np.zeros(0)
    mags = np.zeros(0)
    for p in np.unique(depth).tolist():
        at = depth == p
        new_locs, new_vals = _expand(features[at, :p], bits[at, :p], values[at], limit, width)
        locs, vals, mags = _reduce(
            np.concatenate([locs, new_locs]),
            np.concatenate([vals, new_vals]),
            np.concatenate([mags, np.abs(new_vals)]),
            n,
        )
    vals = np.where(np.abs(vals) <= _NOISE * mags, 0.0, vals)
    locs, vals2d = canonicalise(locs, vals[:, None])
    return locs, vals2d[:, 0]


# --------------------------------------------------------------------------------------------
# fitting the proxy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProxyFit:
    """A tree proxy's sparse Fourier surrogate ``f(x) ~ sum_k values[k] (-1)^<x, k>``.

    Attributes
    ----------
    locations : ndarray (s, d) int64
        Sorted feature indices of each frequency, padded with ``-1`` (the empty set is the
        all ``-1`` row, always present).
    values : ndarray (s,) float64
        Fourier coefficients ``F(k)``.
    n_trees : int
        Trees of the booster the spectrum was read from (the early-stopping best iteration).
    validation_r2 : float
        R^2 of the returned (truncated) surrogate on the held-out validation rows; these rows
        also chose the early-stopping iteration, so it is mildly optimistic. ``nan`` when the
        validation targets are constant.
    """

    locations: np.ndarray
    values: np.ndarray
    n_trees: int
    validation_r2: float


def strongest_terms(locations: np.ndarray, values: np.ndarray, count: int) -> np.ndarray:
    """Rows (sorted) of the ``count`` terms with the largest ``|values|``, the empty set (the
    all ``-1`` row of ``locations`` (s, d)) always among them."""
    empty = np.all(locations < 0, axis=1)
    rest = np.flatnonzero(~empty)
    rest = rest[np.argsort(-np.abs(values[rest]), kind="stable")[: count - 1]]
    return np.sort(np.concatenate([np.flatnonzero(empty), rest]))


def evaluate_spectrum(masks: np.ndarray, locations: np.ndarray,
                      values: np.ndarray) -> np.ndarray:
    """``sum_k values[k] (-1)^<x, k>`` for bool masks (m, n) -> (m,); ``locations`` (s, d)
    padded with -1, ``values`` (s,)."""
    padded = np.concatenate([masks, np.zeros((masks.shape[0], 1), dtype=bool)], axis=1)
    out = np.empty(masks.shape[0])
    step = max(1, 4_000_000 // max(1, locations.size))
    for start in range(0, masks.shape[0], step):
        parity = np.bitwise_xor.reduce(padded[start : start + step][:, locations], axis=2)
        out[start : start + step] = (1.0 - 2.0 * parity) @ values
    return out


def _check_data(masks: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    masks = np.asarray(masks)
    if masks.ndim != 2 or masks.shape[1] < 1:
        raise ValueError(f"masks must be a 2-D array (m, n) with n >= 1, got shape {masks.shape}")
    if masks.dtype != np.bool_:
        if not (np.issubdtype(masks.dtype, np.number) and np.isin(masks, (0, 1)).all()):
            raise ValueError("masks must be boolean (or hold only 0 and 1)")
        masks = masks.astype(bool)
    y = np.asarray(y, dtype=np.float64)
    if y.shape != (masks.shape[0],):
        raise ValueError(f"y must have shape ({masks.shape[0]},) to match masks, got {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError("y must be finite (no NaN or inf)")
    if masks.shape[0] < MIN_ROWS:
        raise ValueError(f"fit_proxy needs at least {MIN_ROWS} rows, got {masks.shape[0]}")
    return masks, y


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


_BINNING_ROWS = 64


@lru_cache(maxsize=8)
def _binning(n: int) -> Any:
    """A constructed LightGBM Dataset over ``n`` 0/1 features whose bin boundaries the proxy's
    datasets reuse (``reference=``), so that each fit skips finding them. Every feature takes
    both values ``_BINNING_ROWS`` times: the bins are those LightGBM finds on any masks where a
    feature takes both values, and a feature constant in the masks cannot split either way
    (the trees are identical)."""
    lgb = _import_lightgbm()
    rows = np.tile(np.array([[0.0], [1.0]], dtype=np.float32), (_BINNING_ROWS, n))
    return lgb.Dataset(rows, np.zeros(len(rows)),
                       params={"verbose": -1, "num_threads": 1}).construct()


def fit_proxy(
    masks: np.ndarray,
    y: np.ndarray,
    *,
    max_degree: int,
    random_state: int | None = None,
    max_terms: int = 600,
    validation_fraction: float = 0.2,
    n_trees: int | None = None,
) -> ProxyFit:
    """Fit one LightGBM regression proxy to ``(masks, y)`` and return its sparse spectrum.

    A seeded ``validation_fraction`` of the rows is held out for early stopping (patience
    20 rounds, at most 1000 rounds, learning rate 0.1), or with ``n_trees`` every row trains
    exactly that many rounds (e.g. the count an early-stopped fit chose, refitted on more
    rows); trees have ``max_depth = max_degree``
    (so their spectrum has no term above that degree), at most 16 leaves and at least 5 rows
    per leaf; above 3,000 training rows every tree sees a bagged sample of 3,000. One thread,
    deterministic. The exact spectrum (:func:`tree_spectrum`) is cut to the ``max_terms``
    largest ``|F(k)|``, the empty set always among them.

    Parameters
    ----------
    masks : ndarray (m, n) bool
        Masks (``True`` = feature kept); 0/1 numbers are accepted. ``m >= MIN_ROWS`` (20).
    y : ndarray (m,) float
        Model outputs on the masks; finite.
    max_degree : int, keyword-only
        Largest interaction order kept (tree depth), ``>= 1``.
    random_state : int or None, keyword-only
        Seed of the validation split and of LightGBM; the same inputs and seed give the
        identical result. ``None``: fresh randomness.
    max_terms : int, keyword-only
        Most Fourier terms returned (the empty set included), ``>= 1``.
    validation_fraction : float, keyword-only
        Share of the rows held out for early stopping, in ``(0, 0.5]``.
    n_trees : int or None, keyword-only
        Boosting rounds on all rows, without early stopping (``>= 1``); None: early stopping.

    Returns
    -------
    ProxyFit
        ``locations (s, d)``, ``values (s,)`` with ``s <= max_terms``, the number of trees
        and the validation R^2 of the returned surrogate (NaN with ``n_trees``: no rows held
        out).

    Raises
    ------
    ImportError
        LightGBM is not installed (message :data:`PROXY_MISSING`).
    ValueError
        Bad shapes, non-finite ``y``, fewer than :data:`MIN_ROWS` rows, or bad settings.
    """
    lgb = _import_lightgbm()
    masks, y = _check_data(masks, y)
    max_degree = _positive_int("max_degree", max_degree)
    max_terms = _positive_int("max_terms", max_terms)
    validation_fraction = float(validation_fraction)
    if not 0.0 < validation_fraction <= 0.5:
        raise ValueError(f"validation_fraction must be in (0, 0.5], got {validation_fraction}")

    rounds = None if n_trees is None else _positive_int("n_trees", n_trees)

    m, n = masks.shape
    rng = np.random.default_rng(random_state)
    order = rng.permutation(m)
    n_val = 0 if rounds else max(1, round(validation_fraction * m))
    val_rows, train_rows = np.sort(order[:n_val]), np.sort(order[n_val:])
    seed = int(rng.integers(1, 2**31 - 1))

    params: dict[str, Any] = {
        "objective": "regression",
        "metric": "l2",
        "learning_rate": 0.1,
        "max_depth": max_degree,
        "num_leaves": min(2**max_degree, 16),
        "min_data_in_leaf": 5,
        "num_threads": 1,
        "deterministic": True,
        "force_row_wise": True,
        "verbose": -1,
        "seed": seed,
    }
    bag = 3000
    if len(train_rows) > bag:
        params.update(bagging_fraction=bag / len(train_rows), bagging_freq=1)
    data = masks.astype(np.float32)
    train = lgb.Dataset(data[train_rows], y[train_rows], params=params, reference=_binning(n))
    if rounds:
        booster = lgb.train(params, train, num_boost_round=rounds, keep_training_booster=True)
    else:
        valid = lgb.Dataset(data[val_rows], y[val_rows], reference=train)
        booster = lgb.train(
            params,
            train,
            num_boost_round=1000,
            valid_sets=[valid],
            callbacks=[lgb.early_stopping(20, first_metric_only=True, verbose=False)],
            keep_training_booster=True,  # no copy through the model text; read once below
        )
    rounds = rounds or int(booster.best_iteration) or booster.num_trees()

    locations, values = tree_spectrum(booster, n, max_degree=max_degree)
    empty = np.all(locations < 0, axis=1)
    keep = strongest_terms(locations, values, max_terms)
    locations, values = locations[keep], values[keep]
    if not empty.any():  # a zero mean: the empty set still leads the spectrum
        locations = np.concatenate([np.full((1, locations.shape[1]), _PAD), locations])
        values = np.concatenate([[0.0], values])
    width = max(1, int(np.count_nonzero(locations >= 0, axis=1).max()))
    locations = np.ascontiguousarray(locations[:, :width])

    y_val = y[val_rows]
    ss_tot = float(np.sum((y_val - y_val.mean()) ** 2)) if n_val else 0.0
    ss_res = float(np.sum((y_val - evaluate_spectrum(masks[val_rows], locations, values)) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    return ProxyFit(locations=locations, values=values, n_trees=rounds, validation_r2=r2)
