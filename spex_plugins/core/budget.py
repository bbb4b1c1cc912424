"""How SPEX spends a budget of model calls.

With the validated refit (the default) a budget B is spent whole:

1. If B covers every mask (``2^n <= B`` and ``n <= EXHAUSTIVE_MAX_N``), all 2^n masks are
   evaluated and the exact Walsh-Hadamard transform is returned.
2. Otherwise ``n_validation = max(MIN_VALIDATION, VALIDATION_SHARE * B)`` uniform random masks
   are held out: the surrogate is chosen by its error on them, never by its fit on the
   samples it was fitted to.
3. The BCH design takes the largest b with ``C * P * 2^b <= DESIGN_SHARE * B`` (at least
   ``MIN_B``); when even ``MIN_B`` does not fit there is no design and the support comes from
   the regression candidates alone. With ``n_groups=None`` (the default) C is 3 or 2,
   whichever reaches the larger b, counting the doubling of rule 5, then whichever starts
   with the larger b (3 on a tie): bins per group matter more than groups. Measured
   on sparse functions (degree <= 4, 10% white noise, R^2 against the noiseless truth, mean
   of 2 seeds): where C = 2 gains a b it wins (n = 100, 150 terms, 10k calls: 0.93 vs 0.57;
   n = 1000, 100 terms, 10k: 0.94 vs 0.74), where both get the same b C = 3 wins (n = 1000,
   50 terms, 10k: 0.97 vs 0.88). Counting the doubling (seeds 0-2, mean held-out R^2, C = 3
   -> 2 where only C = 2 can double): VADER-253 at 5k / 10k calls 0.402 / 0.518 -> 0.468 /
   0.508, VADER-564 0.066 / 0.066 -> 0.064 / 0.078, digits and VADER-45 at 2k 0.967 / 0.986
   -> 0.965 / 0.983.
4. Everything left is uniform random training masks, the empty and the full mask among them
   (their model values make the Shapley values efficient).
5. The design may double once the first masks are in: for n >= ``DOUBLING_MIN_N``, when a
   design at b + 1 (the same
   groups; its first half is the design at b) fits in ``EXTENDED_SHARE`` of the budget,
   ``n_extension`` (= the design's size) of the uniform training masks are held back until
   the design's samples have been peeled. If the recovered interactions carry a sizeable share
   of the variance and much of it is still unexplained, the held-back masks become the design's
   second half, else uniform masks (see :func:`spex_plugins.core.spex.extends_design`).
   Measured at seed 0 (R^2 on held-out uniform masks): a fixed 75% design share instead of
   50% took the 100-term n = 1000 function from 0.566 to exact at 5k calls and its noisy
   version from 0.717 to 0.917 against the noiseless truth at 10k (0.320 to 0.718 at 5k), but
   cost real models up to 0.057 (VADER-253 at 1k: 0.230 -> 0.173; VADER-564 at 2k / 5k:
   -0.015 / -0.016), whose peeled interactions carried at most 4% of the variance.

Why at most half for the design (measured, R^2 on held-out uniform masks): the design's
masks are far from uniform, so on a model that no sparse surrogate fits exactly they bias the
regression, while on sparse functions at large n only the design finds the interactions. On
the quick demo's 37-word MiniLM game a 70% design gave 0.71 / 0.82 at 446 / 1,000 calls, a 40%
one 0.86 / 0.87 (first-order ridge on uniform masks: 0.85 / 0.86). At n = 1000 the 50% cap
keeps the designs that recover 100-term functions at 5k and 10k calls (b = 4 and 5). The
selection also tries every candidate fitted on the uniform training rows alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from .sampler import MAX_B, MIN_B, n_shifts, sample_count

__all__ = [
    "DEFAULT_GROUPS",
    "DESIGN_SHARE",
    "DOUBLING_MIN_N",
    "EXHAUSTIVE_MAX_N",
    "EXTENDED_SHARE",
    "GROUP_CHOICES",
    "MIN_TRAIN",
    "MIN_VALIDATION",
    "VALIDATION_SHARE",
    "BudgetPlan",
    "minimum_budget",
    "plan_budget",
]

DESIGN_SHARE = 0.5
"""Largest share of the budget the BCH design takes before its extension (see 5. above)."""
EXTENDED_SHARE = 0.75
"""Largest share of the budget the BCH design takes once doubled."""
DOUBLING_MIN_N = 15
"""Smallest n whose design may double; for fewer features the surrogate is completed on all
2^n masks instead (``spex_plugins.core.spex.COMPLETION_MAX_N``)."""
VALIDATION_SHARE = 0.15
"""Share of the budget held out (uniform masks) to choose the surrogate."""
MIN_VALIDATION = 16
"""Fewest held-out masks."""
MIN_TRAIN = 16
"""Fewest training masks (the empty and the full mask among them)."""
EXHAUSTIVE_MAX_N = 20
"""Largest n for which a budget of 2^n evaluates every mask (2^20 masks)."""
DEFAULT_GROUPS = 3
"""Subsampling groups C of the older refits, and the first choice of the validated one."""
GROUP_CHOICES = (3, 2)
"""C tried by the validated refit when ``n_groups=None``."""


@dataclass(frozen=True)
class BudgetPlan:
    """How a run spends its model calls.

    ``budget``: masks the run evaluates (distinct masks, at most this many); ``n_groups``: the
    design's subsampling groups C; ``b``: the BCH
    design's log2 bins per group, None without a design; ``n_design``: design samples
    ``C * P * 2^b`` (duplicates counted); ``n_uniform``: uniform random masks beside the design,
    the held-out ones and the two endpoints included; ``n_validation``: of those, held out;
    ``exhaustive``: every mask is evaluated (``budget == 2^n``); ``n_extension``: uniform
    masks that may instead double the design to b + 1 (0 when that does not fit).
    """

    budget: int
    n_groups: int
    b: int | None
    n_design: int
    n_uniform: int
    n_validation: int
    exhaustive: bool
    n_extension: int = 0


def minimum_budget(n: int, t: int, n_groups: int | None, *, refit: str | None) -> int:
    """The smallest budget SPEX accepts for ``n`` features at degree bound ``t``.

    Validated refit: ``min(2^n, MIN_TRAIN + MIN_VALIDATION)``: every mask when that is fewer,
    else ``MIN_TRAIN`` training masks (the ridge penalty handles fewer rows than features:
    below n + 1 the held-out masks decide how much a first-order fit can carry, as a
    first-order ridge or LASSO on the same calls would) and ``MIN_VALIDATION`` held out. The
    older refits: the design at b = ``MIN_B``.
    """
    if refit == "validated":
        floor = MIN_TRAIN + MIN_VALIDATION
        return min(1 << n, floor) if n <= EXHAUSTIVE_MAX_N else floor
    return sample_count(n, t, n_groups or DEFAULT_GROUPS, MIN_B)


def plan_budget(n: int, t: int, n_groups: int | None, budget: int | None, *,
                refit: str | None, b: int | None = None, default_b: int = 8,
                budget_name: str = "budget", use_design: bool = True) -> BudgetPlan:
    """Split ``budget`` model calls between the design, training and held-out masks.

    ``use_design=False`` (the proxy-only support): uniform masks only, no BCH design.
    ``budget=None`` with an explicit ``b``: the design at ``b`` is ``DESIGN_SHARE`` of the run
    (validated refit) or all of it (older refits); without ``b`` the older refits use
    ``default_b`` (callers pass a budget: :func:`spex_plugins.core.settings.default_budget`).
    ``n_groups=None`` chooses C among ``GROUP_CHOICES`` for the validated refit: the one whose
    design reaches the most bins per group (the largest b, doubled where ``n_extension``
    allows), then the one that starts with the larger b, the first on a tie; the older refits
    use ``DEFAULT_GROUPS``. Raises ValueError, naming ``budget_name`` and stating the minimum,
    for a budget that is too small, or for an explicit ``b`` whose design does not fit.
    """
    if n_groups is None:
        if refit != "validated" or b is not None:
            n_groups = DEFAULT_GROUPS
        else:
            plans = [plan_budget(n, t, c, budget, refit=refit, budget_name=budget_name,
                                 use_design=use_design) for c in GROUP_CHOICES]
            return max(plans, key=lambda plan: (-1, -1) if plan.b is None else
                       (plan.b + (plan.n_extension > 0), plan.b))
    minimum = minimum_budget(n, t, n_groups, refit=refit)
    if budget is not None:
        budget = int(budget)
        if budget < minimum:
            rule = (f"{MIN_TRAIN} training and {MIN_VALIDATION} held-out masks"
                    if refit == "validated" else
                    f"{n_groups} groups x {n_shifts(n, t)} shifts x 2^{MIN_B} masks")
            raise ValueError(
                f"{budget_name}={budget} is below the minimum SPEX budget of {minimum} model "
                f"calls for n={n} features at max_order={t} with refit={refit!r} ({rule}); "
                "raise the budget"
            )
    if refit != "validated":
        design_b = b if b is not None else (default_b if budget is None else
                                            _largest_b(n, t, n_groups, budget))
        size = sample_count(n, t, n_groups, design_b)
        if budget is not None and size > budget:
            raise ValueError(f"b={design_b} needs {size} model calls for n={n}, max_order={t}, "
                             f"above {budget_name}={budget}; pass b=None to choose b from the "
                             "budget")
        return BudgetPlan(size, n_groups, design_b, size, 0, 0, False)
    if budget is None:
        if b is None:
            raise ValueError("pass a budget or b")
        budget = max(minimum, -(-sample_count(n, t, n_groups, b) * 10 // int(DESIGN_SHARE * 10)))
    if n <= EXHAUSTIVE_MAX_N and (1 << n) <= budget:
        return BudgetPlan(1 << n, n_groups, None, 0, 1 << n, 0, True)
    n_validation = min(max(MIN_VALIDATION, round(VALIDATION_SHARE * budget)),
                       budget - MIN_TRAIN)
    room = budget - n_validation - 2  # the design never crowds out the endpoints
    if b is not None:
        size = sample_count(n, t, n_groups, b)
        if size > room:
            raise ValueError(
                f"b={b} needs {size} model calls for n={n}, max_order={t}, above "
                f"{budget_name}={budget} less its {n_validation} held-out masks and the two "
                f"endpoints ({room}); pass b=None to choose b from the budget")
        design_b = b
    elif use_design:
        design_b = _largest_b(n, t, n_groups, min(room, int(DESIGN_SHARE * budget)))
    else:
        design_b = None
    size = 0 if design_b is None else sample_count(n, t, n_groups, design_b)
    extension = 0
    if b is None and design_b is not None and design_b < MAX_B and n >= DOUBLING_MIN_N \
            and 2 * size <= min(room - MIN_TRAIN, EXTENDED_SHARE * budget):
        extension = size
    return BudgetPlan(budget, n_groups, design_b, size, budget - size, n_validation, False,
                      extension)


def _largest_b(n: int, t: int, n_groups: int, room: int) -> int | None:
    """Largest b in [MIN_B, MAX_B] with ``sample_count <= room``; None if MIN_B does not fit."""
    per_bin = n_groups * n_shifts(n, t)
    if (per_bin << MIN_B) > room:
        return None
    b = MIN_B
    while b < MAX_B and (per_bin << (b + 1)) <= room:
        b += 1
    return b
