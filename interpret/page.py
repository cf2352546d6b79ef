"""One self-contained HTML page of an example's attention: the image's boxes (SVG) and the
sentence's words, with cross-layer and head selectors; pointing at a word shades its boxes by
its attention to them, pointing at a box shades its words. Every figure is inlined below it.
No network: data, script, styles and images are all in the file."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from model.pretrained import atomic_write

from .attention import AttentionMaps

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".webp": "image/webp", ".bmp": "image/bmp"}


def _data_uri(path: Path) -> str:
    mime = IMAGE_TYPES.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"{path}: the page can inline {', '.join(IMAGE_TYPES)} images, not {path.suffix!r}")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def _maps(maps: AttentionMaps, name: str) -> list:
    """[layer][head] -> query x key, heads: the mean first, then each head; 4 decimals."""
    arr = getattr(maps, name)
    both = np.concatenate([arr.mean(axis=1, keepdims=True), arr], axis=1)
    return np.round(both.astype(np.float64), 4).tolist()


SCRIPT = """
const D = JSON.parse(document.getElementById('data').textContent);
const layerSel = document.getElementById('layer'), headSel = document.getElementById('head');
const words = [...document.querySelectorAll('.word')], boxes = [...document.querySelectorAll('.box')];
let focus = {kind: 'word', index: 1 < words.length ? 1 : 0};
// opacity = sqrt(weight), as in the figures: all of the attention opaque, attention spread thin pale
function scale(row) { return row.map(v => Math.sqrt(Math.min(Math.max(v, 0), 1))); }
function show() {
  const l = +layerSel.value, h = +headSel.value;
  words.forEach(w => { w.style.backgroundColor = ''; w.classList.remove('focus'); });
  boxes.forEach(b => { b.setAttribute('fill-opacity', '0'); b.classList.remove('focus'); });
  if (focus.kind === 'word') {
    const row = D.to_vision[l][h][focus.index];
    scale(row).forEach((s, j) => { boxes[j].setAttribute('fill-opacity', s.toFixed(4));
                                   boxes[j].dataset.weight = row[j]; });
    words[focus.index].classList.add('focus');
  } else {
    const row = D.to_language[l][h][focus.index];
    scale(row).forEach((s, i) => { words[i].style.backgroundColor = `rgba(217, 26, 26, ${s.toFixed(4)})`;
                                   words[i].dataset.weight = row[i]; });
    boxes[focus.index].classList.add('focus');
  }
  document.getElementById('status').textContent = focus.kind === 'word'
    ? `"${D.tokens[focus.index]}" attends to the boxes (cross layer ${l + 1}, ${headSel.selectedOptions[0].text})`
    : `box ${D.labels[focus.index]} attends to the words (cross layer ${l + 1}, ${headSel.selectedOptions[0].text})`;
}
words.forEach((w, i) => w.addEventListener('mouseenter', () => { focus = {kind: 'word', index: i}; show(); }));
boxes.forEach((b, j) => b.addEventListener('mouseenter', () => { focus = {kind: 'box', index: j}; show(); }));
layerSel.addEventListener('change', show);
headSel.addEventListener('change', show);
show();
"""

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1100px; }
.sentence { font-size: 1.4em; margin: 0.6em 0; line-height: 1.8; }
.word { padding: 0.1em 0.25em; margin: 0 0.1em; border-radius: 4px; cursor: pointer; border: 1px solid #ccc; }
.word.focus { border-color: #d91a1a; }
svg { border: 1px solid #999; max-width: 100%; height: auto; }
.box { fill: #d91a1a; stroke: #333; stroke-width: 1.5; cursor: pointer; }
.box.focus { stroke: #d91a1a; stroke-width: 4; }
.label { font-size: 13px; pointer-events: none; paint-order: stroke; stroke: white; stroke-width: 3px; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
#status { color: #555; min-height: 1.2em; }
"""


def write_page(maps: AttentionMaps, path: Path, figures: list[Path] = (), photo: Path | None = None) -> Path:
    """The page at ``path``: the interactive view, then each of ``figures`` inlined."""
    data = {"tokens": maps.tokens, "labels": maps.labels,
            "to_vision": _maps(maps, "to_vision"), "to_language": _maps(maps, "to_language")}
    heads = maps.to_vision.shape[1] if maps.to_vision.size else 0
    w, h = maps.width, maps.height
    layer_options = "".join(f'<option value="{i}"{" selected" if i == len(maps.to_vision) - 1 else ""}>'
                            f"cross layer {i + 1}</option>" for i in range(len(maps.to_vision)))
    head_options = '<option value="0">mean over heads</option>' + "".join(
        f'<option value="{k + 1}">head {k}</option>' for k in range(heads))
    words = "".join(f'<span class="word" data-index="{i}">{html.escape(t)}</span>' for i, t in enumerate(maps.tokens))
    background = (f'<image href="{_data_uri(photo)}" x="0" y="0" width="{w}" height="{h}" '
                  f'preserveAspectRatio="none"/>' if photo is not None else
                  f'<rect x="0" y="0" width="{w}" height="{h}" fill="#eee"/>')
    rects, labels = [], []
    for j, (x1, y1, x2, y2) in enumerate(maps.boxes.tolist()):
        rects.append(f'<rect class="box" data-index="{j}" x="{x1:.1f}" y="{y1:.1f}" width="{x2 - x1:.1f}" '
                     f'height="{y2 - y1:.1f}" fill-opacity="0"><title>{html.escape(maps.labels[j])}</title></rect>')
        labels.append(f'<text class="label" x="{x1 + 3:.1f}" y="{y1 + 14:.1f}">{html.escape(maps.labels[j])}</text>')
    figs = "".join(f'<figure><img alt="{html.escape(f.name)}" src="{_data_uri(Path(f))}">'
                   f"<figcaption>{html.escape(f.name)}</figcaption></figure>" for f in figures)
    cut = f"<p>Cut by the token limit: {html.escape(maps.meta['cut'])!r}</p>" if maps.meta.get("cut") else ""
    # "</" inside the JSON would end the script element early: escape it
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>LXMERT attention: {html.escape(maps.image)}</title>
<link rel="icon" href="data:,"><style>{STYLE}</style></head>
<body>
<h1>Attention of {html.escape(Path(str(maps.meta.get('model', ''))).name or 'the model')} on image {html.escape(maps.image)}</h1>
<p>Model: <code>{html.escape(str(maps.meta.get('model', '')))}</code>. Point at a word to shade the boxes it attends to
(language to vision); point at a box to shade the words it attends to (vision to language).
Opacity is the square root of the attention weight: a box or word holding all of the attention is
opaque, attention spread evenly stays pale.</p>{cut}
<p><label>Layer <select id="layer">{layer_options}</select></label>
<label>Head <select id="head">{head_options}</select></label></p>
<div class="sentence">{words}</div>
<p id="status"></p>
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}">
{background}{''.join(rects)}{''.join(labels)}</svg>
<h2>Figures</h2>{figs}
<script type="application/json" id="data">{payload}</script>
<script>{SCRIPT}</script>
</body></html>
"""
    atomic_write(Path(path), lambda p: Path(p).write_text(page))
    return Path(path)
