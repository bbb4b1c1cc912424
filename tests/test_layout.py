"""Package layout: host-free core, adapters as ordinary modules, public classes that pickle."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from spex_plugins import SPEX, FourierExplanation

HOSTS = ("shap", "shapiq", "captum", "torch", "transformers", "lightgbm", "ray", "sklearn")

BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"No module named {{name!r}} (blocked by the test)")
sys.meta_path.insert(0, Block())
"""


def run_blocked(code: str, blocked=HOSTS) -> subprocess.CompletedProcess:
    program = BLOCKER.format(blocked=set(blocked)) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=120)


def test_the_package_imports_with_every_host_blocked():
    out = run_blocked("""
        import numpy as np
        import spex_plugins, spex_plugins.core, spex_plugins.runtime, spex_plugins.models
        import spex_plugins.comparison, spex_plugins.app, spex_plugins.cli
        from spex_plugins import SPEX
        e = SPEX(max_order=2, b=3, random_state=0).explain(
            lambda m: m[:, 0] * 1.0, 6, progress=False)
        assert abs(e.shapley_values()[0] - 1.0) < 1e-9
        print("ok")
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("module,host,extra", [
    ("shap", "shap", "shap"), ("shapiq", "shapiq", "shapiq"), ("captum", "captum", "captum"),
    ("captum", "torch", "captum"), ("runtime.ray", "ray", "ray")])
def test_an_integration_without_its_host_says_what_to_install(module, host, extra):
    out = run_blocked(f"import spex_plugins.{module}", blocked=(host,))
    assert out.returncode != 0
    assert f"pip install 'spex-plugins[{extra}]'" in out.stderr, out.stderr


def sparse_model(x):
    """Module level, so that explainers built on it pickle."""
    return 2 * x[:, 0] * x[:, 1] - x[:, 2]


def roundtrip(obj):
    for clone in (pickle.loads(pickle.dumps(obj)), copy.deepcopy(obj)):
        assert type(clone) is type(obj)
        yield clone


def test_core_objects_pickle():
    spex = SPEX(max_order=3, b=4, random_state=1, decoder="hard")
    explanation = spex.explain(lambda m: sparse_model(m.astype(float)), 6, progress=False)
    for clone in roundtrip(spex):
        assert repr(clone) == repr(spex)
    for clone in roundtrip(explanation):
        np.testing.assert_array_equal(clone.coefficients, explanation.coefficients)
        assert isinstance(clone, FourierExplanation)


def test_shap_classes_are_module_level_and_pickle():
    shap = pytest.importorskip("shap")
    import spex_plugins.shap as adapter

    assert {"SpexExplainer", "SpexExplanation"} <= set(dir(adapter))
    assert issubclass(adapter.SpexExplainer, shap.Explainer)
    assert adapter.SpexExplainer.__doc__ and adapter.SpexExplanation.__doc__
    background = np.zeros((1, 4))
    explainer = adapter.SpexExplainer(sparse_model, background, random_state=0, b=4)
    explanation = explainer(np.ones((2, 4)), silent=True)
    for clone in roundtrip(explainer):
        np.testing.assert_allclose(clone(np.ones((2, 4)), silent=True).values,
                                   explanation.values)
    for clone in roundtrip(explanation):
        np.testing.assert_array_equal(clone.values, explanation.values)
        assert len(clone.spex) == 2
        np.testing.assert_array_equal(clone.spex[1].coefficients,
                                      explanation.spex[1].coefficients)


def test_shapiq_classes_are_module_level_and_pickle():
    shapiq = pytest.importorskip("shapiq")
    import spex_plugins.shapiq as adapter

    assert "SpexApproximator" in dir(adapter) and adapter.SpexApproximator.__doc__
    from shapiq.approximator.base import Approximator

    approx = adapter.SpexApproximator(n=6, index="k-SII", max_order=2, random_state=0, b=4)
    assert isinstance(approx, Approximator) and isinstance(approx, shapiq.approximator.base
                                                           .Approximator)
    values = approx.approximate(1200, sparse_model)
    for clone in roundtrip(approx):
        again = clone.approximate(1200, sparse_model)
        np.testing.assert_allclose(again.values, values.values)


def test_captum_classes_are_module_level_and_pickle():
    pytest.importorskip("torch")
    pytest.importorskip("captum")
    import torch
    from captum.attr import LLMAttribution, PerturbationAttribution

    import spex_plugins.captum as adapter
    from spex_plugins.models import tiny_causal_lm

    assert {"Spex", "SpexLLMAttribution", "SpexLLMAttributionResult"} <= set(dir(adapter))
    assert issubclass(adapter.Spex, PerturbationAttribution)
    assert issubclass(adapter.SpexLLMAttribution, LLMAttribution)
    assert all(c.__doc__ for c in (adapter.Spex, adapter.SpexLLMAttribution,
                                   adapter.SpexLLMAttributionResult))
    spex = adapter.Spex(sparse_model, random_state=0, b=4)
    x = torch.ones(2, 4, dtype=torch.float64)
    for clone in roundtrip(spex):
        torch.testing.assert_close(clone.attribute(x), spex.attribute(x))
    from captum.attr import TextTemplateInput

    tokenizer, model = tiny_causal_lm(["Anna lives in Oslo.", "Tom plays golf."])
    llm = adapter.SpexLLMAttribution(adapter.Spex(model, random_state=0), tokenizer)
    inp = TextTemplateInput("{} lives in {}.", values=["Anna", "Oslo"])
    result = llm.attribute(inp, target=" golf")
    for clone in roundtrip(result):
        torch.testing.assert_close(clone.seq_attr, result.seq_attr)
        assert clone.interactions("Moebius", 2) == result.interactions("Moebius", 2)
    for clone in roundtrip(llm):
        torch.testing.assert_close(clone.attribute(inp, target=" golf").seq_attr,
                                   result.seq_attr)


def test_runtime_and_value_function_objects_pickle(tmp_path):
    from spex_plugins.models import TabularValueFunction
    from spex_plugins.runtime import CachedValueFunction

    rng = np.random.default_rng(0)
    value = TabularValueFunction(sparse_model, rng.normal(size=4), rng.normal(size=(5, 4)))
    masks = rng.random((20, 4)) < 0.5
    cached = CachedValueFunction(value, tmp_path / "values.cache")
    expected = cached(masks)
    for clone in roundtrip(value):
        np.testing.assert_allclose(clone(masks), expected)
    clone = pickle.loads(pickle.dumps(cached))
    before = clone.n_evaluated
    np.testing.assert_allclose(clone(masks), expected)
    assert clone.n_evaluated == before  # every mask came from the cache: no model call
