"""The SPEX engine: sampler, decoder, peeling, refit, sparse Fourier result, conversions.

Needs only numpy and galois.
"""

from .fourier import FourierExplanation
from .sampler import b_for_budget, min_budget, n_shifts, sample_count
from .spex import SPEX, ProxySPEX

__all__ = ["SPEX", "FourierExplanation", "ProxySPEX", "b_for_budget", "min_budget", "n_shifts",
           "sample_count"]
