"""Comparison baselines: host estimators run on a masked value function, scored by R^2."""

import numpy as np
import pytest

from spex_plugins.models import baselines
from spex_plugins.models.baselines import CallCounter, r2_score, run_baseline

N = 8
WEIGHTS = np.array([0.9, -0.4, 0.0, 0.3, 0.0, 1.2, -0.2, 0.5])


def additive(masks):
    return 0.25 + np.asarray(masks, dtype=float) @ WEIGHTS


def test_r2_and_counter():
    truth = np.array([1.0, 2.0, 3.0])
    assert r2_score(truth, truth) == 1.0
    assert r2_score(truth, np.full(3, 2.0)) == 0.0
    counter = CallCounter(additive)
    masks = np.array([[1, 0] * 4, [1, 0] * 4, [0, 1] * 4], dtype=float)
    np.testing.assert_allclose(counter(masks), additive(masks > 0.5))
    assert counter.calls == 2


@pytest.mark.parametrize("name", ["SHAP PermutationExplainer", "Captum KernelShap",
                                  "shapiq RegressionFBII (Faith-Banzhaf, order 1)"])
def test_first_order_baselines_recover_an_additive_function(name):
    module = baselines.BASELINES[name][0]
    pytest.importorskip(module, reason=f"{module} is not installed here")
    if module == "captum":
        pytest.importorskip("torch", reason="captum needs torch")
    result = run_baseline(name, additive, N, budget=200, seed=0)
    assert result.available and 0 < result.calls <= 2 ** N
    test = np.random.default_rng(0).random((50, N)) < 0.5
    assert r2_score(additive(test), result.predict(test)) > 0.999


def test_missing_host_library_is_reported(monkeypatch):
    monkeypatch.setattr(baselines.importlib.util, "find_spec", lambda name: None)
    result = run_baseline("Captum KernelShap", additive, N, budget=50)
    assert not result.available and "captum is not installed" in result.reason
