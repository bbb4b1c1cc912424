"""spex-plugins: SPEX sparse spectral interaction explanations for SHAP, Captum and shapiq.

``from spex_plugins import SPEX`` works with numpy and galois alone; the host adapters live in
their own modules and import their host library only when used.
"""

from .core import SPEX, FourierExplanation, ProxySPEX, b_for_budget, min_budget, sample_count

__version__ = "0.1.0"

__all__ = ["SPEX", "FourierExplanation", "ProxySPEX", "__version__", "b_for_budget", "min_budget",
           "sample_count"]
