"""The one place adapters turn user settings into a :class:`~spex_plugins.SPEX` engine.

Every adapter accepts ``spex=SPEX(...)`` and/or the keyword names of :class:`SPEX` itself and
forwards all of them here, so the options are declared once (``SPEX.__init__``), validated
once, and the degree cap and the budget check stay in the core.
"""

from __future__ import annotations

import inspect
from typing import Any

from .spex import SPEX

__all__ = ["DEFAULT_BUDGET", "default_budget", "engine", "option_names", "resolve_budget"]

DEFAULT_BUDGET = 1000
"""Model calls an adapter spends when the user names no budget (``max_evals="auto"``,
``n_samples=None``); see :func:`default_budget`."""


def option_names() -> tuple[str, ...]:
    """The keyword names :class:`SPEX` accepts (its settings)."""
    return tuple(p for p in inspect.signature(SPEX.__init__).parameters if p != "self")


def engine(spex: SPEX | None = None, **options: Any) -> SPEX:
    """The engine of an adapter: ``spex`` itself, or ``SPEX(**options)``, or ``spex`` with
    ``options`` overriding some of its settings (a new object; ``spex`` is not changed).

    Unknown option names raise a ``TypeError`` that lists the valid ones.
    """
    unknown = sorted(set(options) - set(option_names()))
    if unknown:
        raise TypeError(f"unknown SPEX option(s) {unknown}; SPEX takes {list(option_names())}")
    if spex is None:
        return SPEX(**options)
    if not isinstance(spex, SPEX):
        raise TypeError(f"spex must be a spex_plugins.SPEX instance, got {type(spex).__name__}")
    if not options:
        return spex
    current = {name: getattr(spex, name) for name in option_names()}
    return SPEX(**(current | options))


def default_budget(spex: SPEX, n: int) -> int:
    """Model calls for an explanation whose budget the user left open.

    All 2^n masks when that is at most :data:`DEFAULT_BUDGET` (n <= 9: the exact transform;
    never below the engine's minimum), else ``max(DEFAULT_BUDGET, spex.min_budget(n))``: about
    a thousand model calls, which a CPU-bound language model answers in minutes, raised to the
    engine's minimum where the design needs more. Pass an explicit budget for more
    faithfulness.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n < 63 and (1 << n) <= DEFAULT_BUDGET:
        return max(1 << n, spex.min_budget(n))
    return max(DEFAULT_BUDGET, spex.min_budget(n))


def resolve_budget(spex: SPEX, n: int, budget: int | None) -> int | None:
    """The budget an adapter hands to ``spex.explain`` for ``n`` players: the user's
    ``budget`` when given; None (the design of the engine's explicit ``b`` decides) when the
    user set ``b`` instead; else :func:`default_budget`."""
    if budget is not None:
        return budget
    return None if spex.b is not None else default_budget(spex, n)
