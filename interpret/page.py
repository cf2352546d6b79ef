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


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _photo_uri(photo: np.ndarray) -> str:
    """The photo (as :func:`interpret.figures.read_image` gives it: upright RGB) as an inline PNG."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="PNG")
    return _png_uri(buf.getvalue())


def _maps(maps: AttentionMaps, name: str) -> list:
    """[layer][head] -> query x key, heads: the mean first, then each head; 4 decimals."""
    arr = getattr(maps, name)
    both = np.concatenate([arr.mean(axis=1, keepdims=True), arr], axis=1)
    return np.round(both.astype(np.float64), 4).tolist()


SCRIPT = """
const D = JSON.parse(document.getElementById('data').textContent);
const layerSel = document.getElementById('layer'), headSel = document.getElementById('head');
const words = [...document.querySelectorAll('.word')];
const boxes = [];  // by box index (the SVG lists them largest first, so that small boxes lie on top)
document.querySelectorAll('.box').forEach(b => { boxes[+b.dataset.index] = b; });
const canvas = document.getElementById('shade-canvas'), shadeImage = document.getElementById('shade');
let focus = {kind: 'word', index: 1 < words.length ? 1 : 0};
// opacity = sqrt(weight), as in the figures: all of the attention opaque, attention spread thin pale
function opacity(v) { return Math.sqrt(Math.min(Math.max(v, 0), 1)); }
function paint(row) {  // each pixel: the largest opacity among the boxes covering it
  // read back at every paint (toDataURL): a canvas kept in memory, as the browser advises
  const ctx = canvas.getContext('2d', {willReadFrequently: true}), w = canvas.width, h = canvas.height;
  const alpha = new Float32Array(w * h);
  D.boxes.forEach((b, j) => {
    const s = opacity(row[j]);
    const x1 = Math.max(0, Math.round(b[0])), y1 = Math.max(0, Math.round(b[1]));
    const x2 = Math.min(w, Math.round(b[2])), y2 = Math.min(h, Math.round(b[3]));
    for (let y = y1; y < y2; y++) for (let x = x1; x < x2; x++) alpha[y * w + x] = Math.max(alpha[y * w + x], s);
  });
  const image = ctx.createImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    image.data[4 * i] = 217; image.data[4 * i + 1] = 26; image.data[4 * i + 2] = 26;
    image.data[4 * i + 3] = Math.round(255 * alpha[i]);
  }
  ctx.putImageData(image, 0, 0);
  shadeImage.setAttribute('href', canvas.toDataURL('image/png'));
}
function show() {
  const l = +layerSel.value, h = +headSel.value, head = headSel.selectedOptions[0].text;
  words.forEach(w => { w.style.backgroundColor = ''; w.classList.remove('focus'); delete w.dataset.weight; });
  boxes.forEach(b => { b.classList.remove('focus'); delete b.dataset.weight; });
  if (focus.kind === 'word') {
    const row = D.to_vision[l][h][focus.index];
    row.forEach((v, j) => { boxes[j].dataset.weight = v; });
    paint(row);
    words[focus.index].classList.add('focus');
  } else {
    const row = D.to_language[l][h][focus.index];
    row.forEach((v, i) => { words[i].style.backgroundColor = `rgba(217, 26, 26, ${opacity(v).toFixed(4)})`;
                            words[i].dataset.weight = v; });
    paint(new Array(boxes.length).fill(0));
    boxes[focus.index].classList.add('focus');
  }
  document.getElementById('status').textContent = focus.kind === 'word'
    ? `"${D.tokens[focus.index]}" attends to the boxes (cross layer ${l + 1}, ${head})`
    : `box ${D.labels[focus.index]} attends to the words (cross layer ${l + 1}, ${head})`;
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
.box { fill: #d91a1a; fill-opacity: 0; stroke: #333; stroke-width: 1.5; cursor: pointer; pointer-events: all; }
.box.focus { stroke: #d91a1a; stroke-width: 4; }
.label { font-size: 13px; pointer-events: none; paint-order: stroke; stroke: white; stroke-width: 3px; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
#status { color: #555; min-height: 1.2em; }
"""


def write_page(maps: AttentionMaps, path: Path, figures: list[Path] = (), photo: np.ndarray | None = None,
               head: int | None = None) -> Path:
    """The page at ``path``: the interactive view (opened on ``head``, else the mean over heads),
    then each of ``figures`` inlined. A model without cross layers gets the figures alone."""
    w, h = maps.width, maps.height
    cut = f"<p>Cut by the token limit: {html.escape(repr(maps.meta['cut']))}</p>" if maps.meta.get("cut") else ""
    figs = "".join(f'<figure><img alt="{html.escape(Path(f).name)}" src="{_png_uri(Path(f).read_bytes())}">'
                   f"<figcaption>{html.escape(Path(f).name)}</figcaption></figure>" for f in figures)
    interactive = "<p>The model has no cross-modality layers: no word-to-box attention to show.</p>"
    script = ""
    if len(maps.to_vision):
        data = {"tokens": maps.tokens, "labels": maps.labels, "boxes": np.round(maps.boxes.astype(np.float64), 2).tolist(),
                "to_vision": _maps(maps, "to_vision"), "to_language": _maps(maps, "to_language")}
        layer_options = "".join(f'<option value="{i}"{" selected" if i == len(maps.to_vision) - 1 else ""}>'
                                f"cross layer {i + 1}</option>" for i in range(len(maps.to_vision)))
        head_options = f'<option value="0"{" selected" if head is None else ""}>mean over heads</option>' + "".join(
            f'<option value="{k + 1}"{" selected" if head == k else ""}>head {k}</option>' for k in range(maps.num_heads))
        words = "".join(f'<span class="word" data-index="{i}">{html.escape(t)}</span>' for i, t in enumerate(maps.tokens))
        background = (f'<image href="{_photo_uri(photo)}" x="0" y="0" width="{w}" height="{h}" preserveAspectRatio="none"/>'
                      if photo is not None else f'<rect x="0" y="0" width="{w}" height="{h}" fill="#eee"/>')
        area = (maps.boxes[:, 2] - maps.boxes[:, 0]) * (maps.boxes[:, 3] - maps.boxes[:, 1])
        rects, labels = [], []
        for j in np.argsort(-area, kind="stable"):  # largest first: a box inside another lies on top of it
            x1, y1, x2, y2 = maps.boxes[j].tolist()
            label = html.escape(maps.labels[j])
            rects.append(f'<rect class="box" data-index="{j}" x="{x1:.1f}" y="{y1:.1f}" width="{x2 - x1:.1f}" '
                         f'height="{y2 - y1:.1f}"><title>{label}</title></rect>')
            labels.append(f'<text class="label" x="{x1 + 3:.1f}" y="{y1 + 14:.1f}">{label}</text>')
        interactive = f"""<p>Point at a word to shade the boxes it attends to (language to vision); point at a box to
shade the words it attends to (vision to language). Opacity is the square root of the attention weight: a box
or word holding all of the attention is opaque, attention spread evenly stays pale; where boxes overlap, the
strongest shows.</p>
<p><label>Layer <select id="layer">{layer_options}</select></label>
<label>Head <select id="head">{head_options}</select></label></p>
<div class="sentence">{words}</div>
<p id="status"></p>
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}">
{background}<image id="shade" x="0" y="0" width="{w}" height="{h}" preserveAspectRatio="none"/>
{''.join(rects)}{''.join(labels)}</svg>
<canvas id="shade-canvas" width="{w}" height="{h}" hidden></canvas>"""
        # "</" inside the JSON would end the script element early: escape it
        payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
        script = f'<script type="application/json" id="data">{payload}</script>\n<script>{SCRIPT}</script>'
    model = str(maps.meta.get("model", ""))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>LXMERT attention: {html.escape(maps.image)}</title>
<link rel="icon" href="data:,"><style>{STYLE}</style></head>
<body>
<h1>Attention of {html.escape(Path(model).name or 'the model')} on image {html.escape(maps.image)}</h1>
<p>Model: <code>{html.escape(model)}</code>. Sentence: {html.escape(maps.sentence)}</p>{cut}
{interactive}
<h2>Figures</h2>{figs}
{script}
</body></html>
"""
    atomic_write(Path(path), lambda p: Path(p).write_text(page, encoding="utf-8"))
    return Path(path)
