"""Self-contained HTML report of an explanation: first-order highlights, top interactions with
their words or spans, an interaction figure (PNG, embedded) and an optional comparison table.

The figure shows the features of the strongest pairwise interactions only, so it stays readable
when n is in the hundreds. matplotlib is imported only to draw it.
"""

from __future__ import annotations

import base64
import html
import io
import os

import numpy as np

__all__ = ["comparison_table", "figure_html", "interaction_figure", "interactions_table",
           "top_interactions", "write_report"]

FIGURE_FEATURES = 24


def _label(features: list[str], i: int, width: int = 18) -> str:
    word = features[i] if len(features[i]) <= width else features[i][:width - 1] + "…"
    return f"{i}:{word}"


def top_interactions(explanation, k: int = 10, index: str = "Moebius",
                     min_order: int = 2) -> list[tuple[tuple[int, ...], float]]:
    """The ``k`` largest-magnitude sets of ``index`` with at least ``min_order`` features."""
    values = explanation.interactions(index)
    items = [(s, float(v)) for s, v in values.items() if len(s) >= min_order]
    items.sort(key=lambda item: (-abs(item[1]), item[0]))
    return items[:k]


def _pair_matrix(explanation, index: str = "FSII") -> tuple[np.ndarray, np.ndarray]:
    """(features shown, their pairwise ``index`` values of order 2) for the figure."""
    pairs = {s: v for s, v in explanation.interactions(index, order=2).items() if len(s) == 2}
    strength: dict[int, float] = {}
    for (i, j), v in pairs.items():
        strength[i] = strength.get(i, 0.0) + abs(v)
        strength[j] = strength.get(j, 0.0) + abs(v)
    shown = np.array(sorted(sorted(strength, key=lambda i: -strength[i])[:FIGURE_FEATURES]),
                     dtype=np.int64)
    position = {int(f): row for row, f in enumerate(shown)}
    matrix = np.zeros((len(shown), len(shown)))
    for (i, j), v in pairs.items():
        if i in position and j in position:
            matrix[position[i], position[j]] = matrix[position[j], position[i]] = v
    return shown, matrix


def interaction_figure(explanation, features: list[str], path: str | None = None) -> bytes:
    """PNG bytes (also written to ``path``): first-order values of the 20 strongest features and
    the order-2 FSII heat map over the features of the strongest pairs."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    shapley = np.asarray(explanation.shapley_values()).reshape(explanation.n, -1)[:, 0]
    top = np.argsort(-np.abs(shapley))[:20][::-1]
    shown, matrix = _pair_matrix(explanation)
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 6.5),
                                      gridspec_kw={"width_ratios": [1, 1.5]})
    left.barh(range(len(top)), shapley[top],
              color=["#d9534f" if v > 0 else "#337ab7" for v in shapley[top]])
    left.set_yticks(range(len(top)), [_label(features, i) for i in top], fontsize=8)
    left.set_title("Shapley values (from the SPEX surrogate)")
    left.axvline(0, color="black", lw=0.6)
    if len(shown) >= 2:
        bound = float(np.abs(matrix).max()) or 1.0
        image = right.imshow(matrix, cmap="RdBu_r", vmin=-bound, vmax=bound)
        labels = [_label(features, i, 14) for i in shown]
        right.set_xticks(range(len(shown)), labels, rotation=90, fontsize=7)
        right.set_yticks(range(len(shown)), labels, fontsize=7)
        fig.colorbar(image, ax=right, shrink=0.8, label="pairwise FSII")
        right.set_title(f"Pairwise interactions (the {len(shown)} features of the strongest pairs"
                        f", of n = {explanation.n})", fontsize=10)
    else:
        right.text(0.5, 0.5, "no pairwise interactions recovered", ha="center", va="center")
        right.set_axis_off()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    data = buffer.getvalue()
    if path is not None:
        with open(path, "wb") as fh:
            fh.write(data)
    return data


def _highlighted_text(text: str, spans: list[tuple[int, int]], values: np.ndarray,
                      features: list[str], focus: tuple[int, ...] | None = None) -> str:
    """HTML of ``text`` with every feature span coloured by its value (or ``focus`` marked)."""
    bound = float(np.abs(values).max()) or 1.0
    parts, cursor = [], 0
    for i, (s, e) in enumerate(spans):
        parts.append(html.escape(text[cursor:s]))
        piece = html.escape(text[s:e])
        if focus is not None:
            parts.append(f"<mark>{piece}</mark>" if i in focus else piece)
        else:
            v = float(values[i])
            colour = "217,83,79" if v > 0 else "51,122,183"
            alpha = min(1.0, abs(v) / bound)
            parts.append(f'<span class="f" style="background:rgba({colour},{alpha:.2f})" '
                         f'title="{i}: {html.escape(features[i])} = {v:+.4f}">{piece}</span>')
        cursor = e
    parts.append(html.escape(text[cursor:]))
    return "".join(parts).replace("\n", "<br>")


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.5}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
.text{padding:1em;border:1px solid #ddd;border-radius:6px;background:#fcfcfc}
.f{border-radius:3px;padding:0 1px} mark{background:#f0ad4e;border-radius:3px}
table{border-collapse:collapse;margin:0.5em 0;font-size:0.92em}
td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top} th{background:#f3f3f3}
.snippet{font-size:0.85em;color:#555} .meta td:first-child{font-weight:600}
img{max-width:100%}
"""


def figure_html(explanation, features: list[str]) -> str:
    """The :func:`interaction_figure` of ``explanation`` as an embedded HTML image."""
    png = base64.b64encode(interaction_figure(explanation, features)).decode()
    return f'<img alt="interaction figure" src="data:image/png;base64,{png}">'


def interactions_table(explanation, features: list[str], text: str | None = None,
                       spans: list[tuple[int, int]] | None = None, k: int = 10) -> str:
    """HTML table of the ``k`` strongest Möbius interactions, each with its features and, when
    ``text`` and ``spans`` are given, a snippet of the text with those features marked."""
    shapley = np.asarray(explanation.shapley_values()).reshape(explanation.n, -1)[:, 0]
    rows = []
    for rank, (subset, value) in enumerate(top_interactions(explanation, k), start=1):
        words = " + ".join(html.escape(_label(features, i, 40)) for i in subset)
        cells = [str(rank), words, f"{value:+.4f}"]
        if text is not None and spans is not None:
            first, last = spans[min(subset)][0], spans[max(subset)][1]
            lo, hi = max(0, first - 40), min(len(text), last + 40)
            local = [(s - lo, e - lo) for s, e in spans if lo <= s and e <= hi]
            offset = next(i for i, (s, e) in enumerate(spans) if lo <= s and e <= hi)
            marked = _highlighted_text(text[lo:hi], local, shapley, features,
                                       focus=tuple(i - offset for i in subset))
            cells.append(f'<span class="snippet">…{marked}…</span>')
        rows.append(cells)
    header = ["#", "features", "Möbius value"] + (["in context"] if text is not None else [])
    return _table(header, rows) if rows else "<p>No interactions were recovered.</p>"


def comparison_table(comparison: list[dict] | None, notes: list[str] | None = None) -> str:
    """HTML of a comparison (rows as dicts with the same keys) followed by its notes."""
    parts = []
    if comparison:
        keys = list(comparison[0])
        parts.append(_table(keys, [[html.escape(str(row.get(key, ""))) for key in keys]
                                   for row in comparison]))
    parts += [f"<p>{html.escape(note)}</p>" for note in notes or []]
    return "\n".join(parts)


def write_report(path: str | os.PathLike | None, explanation, features: list[str], *,
                 title: str, text: str | None = None, spans: list[tuple[int, int]] | None = None,
                 details: dict | None = None, comparison: list[dict] | None = None,
                 notes: list[str] | None = None, k: int = 10,
                 sections: list[str] | None = None) -> str:
    """Write (when ``path`` is given) and return the HTML report of ``explanation``.

    ``features`` names the n features; with ``text`` and ``spans`` the text is shown with
    first-order highlights and each interaction with its spans marked. ``details`` is a dict of
    settings shown as a table; ``comparison`` a list of rows (dicts with the same keys) shown as
    the side-by-side comparison table; ``notes`` are shown under it. ``sections`` are extra
    HTML sections (e.g. from :func:`interactions_table`) appended at the end.
    """
    shapley = np.asarray(explanation.shapley_values()).reshape(explanation.n, -1)[:, 0]
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if details:
        rows = [[html.escape(str(k)), html.escape(str(v))] for k, v in details.items()]
        parts.append('<h2>Settings</h2><div class="meta">' + _table(["", ""], rows) + "</div>")
    parts.append("<h2>First-order attributions</h2>")
    if text is not None and spans is not None:
        parts.append("<p>Each feature is coloured by its Shapley value computed from the SPEX "
                     "surrogate (red raises the output, blue lowers it; hover for values).</p>")
        parts.append(f'<div class="text">{_highlighted_text(text, spans, shapley, features)}'
                     "</div>")
    order = np.argsort(-np.abs(shapley))[:k]
    parts.append(_table(["feature", "Shapley value"],
                        [[html.escape(_label(features, i, 40)), f"{shapley[i]:+.4f}"]
                         for i in order]))
    parts.append("<h2>Top interactions</h2><p>Möbius coefficients of two or more features: "
                 "the output change when all of them are present, beyond what their subsets "
                 "explain.</p>")
    parts.append(interactions_table(explanation, features, text, spans, k))
    parts.append("<h2>Interaction figure</h2>" + figure_html(explanation, features))
    if comparison:
        parts.append("<h2>Comparison at the same number of model calls</h2>")
    parts.append(comparison_table(comparison, notes))
    parts += sections or []
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
    if path is not None:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(page)
    return page
