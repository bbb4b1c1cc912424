"""`spex-plugins demo --llm` on a tiny random causal LM (fast stand-in for SmolLM2): the printed
results, the HTML report, the joint removal effects and the cached re-run."""

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the LLM demo runs a torch model")
pytest.importorskip("transformers", reason="the LLM demo needs transformers")

from spex_plugins.app import demo_llm  # noqa: E402
from spex_plugins.app.demo_llm import (  # noqa: E402
    CONTEXT,
    QUESTION,
    LLMDemoSettings,
    joint_removal_effects,
    removal_masks,
    run_llm_demo,
)
from spex_plugins.core import FourierExplanation  # noqa: E402
from spex_plugins.models import smollm2, tiny_causal_lm  # noqa: E402

CHAT = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def tiny_chat_lm(device=None, dtype=None, progress=True):
    tokenizer, model = tiny_causal_lm([CONTEXT, QUESTION], hidden=32, layers=1, seed=0)
    tokenizer.chat_template = CHAT
    return model, tokenizer


def test_joint_removal_effect_is_the_second_difference_at_the_full_input():
    # f = 3 + 2 x0 x1 - x1 x2 + 0.5 x0 x1 x2 over 4 features, as Moebius coefficients
    moebius = {(): 3.0, (0, 1): 2.0, (1, 2): -1.0, (0, 1, 2): 0.5}
    from spex_plugins.core import conversions

    locations = np.full((4, 3), -1)
    locations[1, :2], locations[2, :2], locations[3] = (0, 1), (1, 2), (0, 1, 2)
    fl, fv = conversions.moebius_to_fourier(locations,
                                            np.array(list(moebius.values()))[:, None])
    explanation = FourierExplanation(4, fl, fv)

    def f(masks):
        x = np.asarray(masks, float)
        return 3 + 2 * x[:, 0] * x[:, 1] - x[:, 1] * x[:, 2] + 0.5 * x[:, 0] * x[:, 1] * x[:, 2]

    effects = dict(joint_removal_effects(explanation))
    for pair in itertools.combinations(range(4), 2):
        v = f(removal_masks(4, pair))
        assert effects.get(pair, 0.0) == pytest.approx(v[0] - v[1] - v[2] + v[3], abs=1e-9)
    assert next(iter(dict(joint_removal_effects(explanation)))) == (0, 1)  # 2 + 0.5


def test_llm_demo_report_and_cached_rerun(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(smollm2, "load_offline_smollm2", tiny_chat_lm)
    settings = LLMDemoSettings(cache=str(tmp_path / "llm.cache"), out=str(tmp_path / "r.html"),
                               progress=False)
    first = run_llm_demo(settings)
    printed = capsys.readouterr().out
    assert "greedy answer:" in printed and "Top interactions" in printed
    assert "joint removal effect" in printed and "The two hops [0] + [1]" in printed
    value = first["value"]
    assert value.n == 5 and value.features[0] == "The key is in the red box."
    assert value.prefix_length > 0 and value.chat
    assert np.isfinite(first["r2"]) and first["explanation"].n_model_calls <= 2 ** 5
    html = (tmp_path / "r.html").read_text()
    for section in ("<h2>Settings</h2>", "<h2>Top interactions</h2>",
                    "<h2>Pairs at the full context: joint removal effect</h2>", QUESTION):
        assert section in html
    assert first["pairs"] and first["pairs"][0]["model"]  # the top pair measured on the model
    again = run_llm_demo(settings)  # served from the cache: identical results
    assert "(32 model outputs stored)" in capsys.readouterr().out  # all 2^5 masks
    assert again["pairs"] == first["pairs"] and again["r2"] == first["r2"]
    assert demo_llm.HOPS == (0, 1)
