"""PNG figures of the attention maps, like the paper's appendix: language self-attention (word x
word per layer), object-relationship attention (a graph over the image's boxes), and
cross-modality attention (each word's boxes shaded; each box's words).

Drawn with matplotlib's object-oriented API (no pyplot state, no display). Figures over the image
are exactly the image's stored width x height in pixels, so a box's pixels lie at its coordinates.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from model.pretrained import atomic_write

from .attention import AttentionMaps

HIGHLIGHT = (0.85, 0.1, 0.1)  # the colour of attention on boxes and edges
CANVAS = (0.93, 0.93, 0.93)  # the plain canvas when no image file is given
DPI = 100


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (under a temporary name, then renamed)."""
    atomic_write(Path(path), lambda p: fig.savefig(p, format="png", dpi=DPI))
    return Path(path)


def read_image(path: Path) -> np.ndarray:
    """A photo (any format Pillow reads) as an (H, W, 3) uint8 array, turned upright by its EXIF
    orientation as browsers show it; greyscale and palette images become RGB."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable image file ({exc})") from None


def _background(ax, maps: AttentionMaps, photo: np.ndarray | None) -> None:
    """Axes spanning the image in pixel coordinates (y down), the photo stretched onto its stored
    size, or the plain canvas."""
    w, h = maps.width, maps.height
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()
    if photo is not None:
        ax.imshow(photo, extent=(0, w, h, 0), aspect="auto", zorder=0)
    else:
        ax.add_patch(Rectangle((0, 0), w, h, color=CANVAS, zorder=0))


def _over_image(maps: AttentionMaps, photo: np.ndarray | None) -> tuple[Figure, object]:
    """A figure of the image's stored size whose one axes is the image (see :func:`_background`)."""
    fig = Figure(figsize=(maps.width / DPI, maps.height / DPI), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    _background(ax, maps, photo)
    return fig, ax


def _outline(ax, maps: AttentionMaps, boxes: list[int], labels: bool = True) -> None:
    for k in boxes:
        x1, y1, x2, y2 = maps.boxes[k]
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=(0.2, 0.2, 0.2), linewidth=0.8,
                               zorder=2))
        if labels:
            ax.text(x1 + 2, y1 + 2, maps.labels[k], fontsize=7, va="top", ha="left", zorder=5,
                    bbox={"facecolor": "white", "alpha": 0.7, "pad": 1, "linewidth": 0})


def opacity(weights: np.ndarray) -> np.ndarray:
    """How opaque a box is drawn for its attention weight: sqrt(weight), so a box holding all of a
    word's attention is opaque and attention spread evenly over many boxes stays pale (the page
    uses the same rule)."""
    return np.sqrt(np.clip(weights, 0.0, 1.0))


def shade(maps: AttentionMaps, weights: np.ndarray) -> np.ndarray:
    """(H, W) opacity of each pixel of the image: the largest :func:`opacity` among the boxes
    covering it (overlapping boxes do not add up; a small box inside a large one shows its own)."""
    out = np.zeros((maps.height, maps.width), dtype=np.float32)
    alpha = opacity(weights)
    for k, (x1, y1, x2, y2) in enumerate(np.rint(maps.boxes).astype(int)):
        x1, x2 = np.clip([x1, x2], 0, maps.width)
        y1, y2 = np.clip([y1, y2], 0, maps.height)
        region = out[y1:y2, x1:x2]
        np.maximum(region, alpha[k], out=region)
    return out


def shade_boxes(ax, maps: AttentionMaps, weights: np.ndarray, title: str | None = None) -> None:
    """The highlight laid over the image at :func:`shade`; the most attended box outlined,
    labelled and its weight written in it."""
    layer = np.zeros((maps.height, maps.width, 4), dtype=np.float32)
    layer[..., :3] = HIGHLIGHT
    layer[..., 3] = shade(maps, weights)
    ax.imshow(layer, extent=(0, maps.width, maps.height, 0), aspect="auto", interpolation="nearest", zorder=1)
    top = int(np.argmax(weights))
    _outline(ax, maps, [top])
    x1, y1, x2, y2 = maps.boxes[top]
    ax.text(x2 - 2, y2 - 2, f"{weights[top]:.0%}", fontsize=7, va="bottom", ha="right", zorder=5,
            bbox={"facecolor": "white", "alpha": 0.7, "pad": 1, "linewidth": 0})
    if title:
        ax.text(maps.width / 2, maps.height - 4, title, fontsize=10, ha="center", va="bottom", zorder=6,
                bbox={"facecolor": "white", "alpha": 0.85, "pad": 2, "linewidth": 0})


def _slug(token: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", token.lower()) or "punct"


def language_figure(maps: AttentionMaps, head: int | None) -> Figure:
    """One word x word map per language layer (row: the attending word)."""
    per_layer = maps.heads("language", head)
    n = len(per_layer)
    t = len(maps.tokens)
    side = max(3.0, 0.22 * t + 1.2)
    fig = Figure(figsize=(side * n + 0.6, side + 0.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    top = max(float(per_layer.max()), 1e-6)  # one scale for every layer
    for i, (ax, a) in enumerate(zip(axes, per_layer)):
        image = ax.imshow(a, cmap="Reds", vmin=0, vmax=top)
        ax.set_xticks(range(t), maps.tokens, rotation=90, fontsize=7)
        ax.set_yticks(range(t), maps.tokens if i == 0 else [""] * t, fontsize=7)
        ax.set_title(f"language layer {i + 1}", fontsize=9)
    fig.colorbar(image, ax=list(axes), shrink=0.6)
    fig.suptitle(f"language self-attention ({_heads(head)})", fontsize=10)
    return fig


def relation_figure(maps: AttentionMaps, layer: int, head: int | None, photo: np.ndarray | None = None,
                    edges: int = 12) -> Figure:
    """Object-relationship layer ``layer``: the image's boxes, and its ``edges`` strongest
    attention weights (box to another box) drawn between box centres, wider and darker when stronger."""
    a = maps.heads("relations", head)[layer].copy()
    np.fill_diagonal(a, 0.0)
    fig, ax = _over_image(maps, photo)
    _outline(ax, maps, range(len(maps.boxes)), labels=False)
    centres = (maps.boxes[:, :2] + maps.boxes[:, 2:]) / 2
    strongest = np.argsort(a, axis=None, kind="stable")[::-1][:edges]
    top = float(a.max()) or 1.0
    for flat in strongest[::-1]:  # weakest first: the strongest on top
        i, j = np.unravel_index(flat, a.shape)
        strength = float(a[i, j]) / top
        ax.annotate("", xy=centres[j], xytext=centres[i], zorder=3,
                    arrowprops={"arrowstyle": "-|>", "color": HIGHLIGHT, "alpha": 0.25 + 0.75 * strength,
                                "linewidth": 0.5 + 3.5 * strength, "shrinkA": 2, "shrinkB": 2})
    used = sorted({int(k) for flat in strongest for k in np.unravel_index(flat, a.shape)})
    _outline(ax, maps, used)
    ax.text(4, maps.height - 4, f"object-relationship layer {layer + 1} ({_heads(head)}): {edges} strongest edges",
            fontsize=9, va="bottom", zorder=6, bbox={"facecolor": "white", "alpha": 0.85, "pad": 2, "linewidth": 0})
    return fig


def word_boxes_figure(maps: AttentionMaps, layer: int, head: int | None, word: int,
                      photo: np.ndarray | None = None) -> Figure:
    """Cross layer ``layer``: word ``word``'s attention over the boxes, each box shaded by it."""
    fig, ax = _over_image(maps, photo)
    weights = maps.heads("to_vision", head)[layer][word]
    shade_boxes(ax, maps, weights, f"{maps.tokens[word]!r} -> boxes, cross layer {layer + 1} ({_heads(head)})")
    return fig


def words_grid_figure(maps: AttentionMaps, layer: int, head: int | None, photo: np.ndarray | None = None,
                      columns: int = 4) -> Figure:
    """Every word's boxes in one figure: a panel per word (the paper's cross-modality view)."""
    weights = maps.heads("to_vision", head)[layer]
    t = len(maps.tokens)
    rows = (t + columns - 1) // columns
    aspect = maps.height / maps.width
    fig = Figure(figsize=(3.2 * columns, 3.2 * aspect * rows + 0.5), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for k, ax in enumerate(axes):
        ax.set_axis_off()
        if k >= t:
            continue
        _background(ax, maps, photo)
        shade_boxes(ax, maps, weights[k])
        ax.set_title(maps.tokens[k], fontsize=10)
    fig.suptitle(f"cross-modality attention, language to vision (cross layer {layer + 1}, {_heads(head)})",
                 fontsize=11)
    return fig


def box_words_figure(maps: AttentionMaps, layer: int, head: int | None) -> Figure:
    """The reverse: each box's attention over the words (row: a box, by its label)."""
    a = maps.heads("to_language", head)[layer]
    n, t = a.shape
    fig = Figure(figsize=(0.35 * t + 2.8, 0.25 * n + 1.4), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(a, cmap="Reds", vmin=0, vmax=max(float(a.max()), 1e-6), aspect="auto")
    ax.set_xticks(range(t), maps.tokens, rotation=90, fontsize=7)
    ax.set_yticks(range(n), maps.labels, fontsize=7)
    ax.set_title(f"cross-modality attention, vision to language (cross layer {layer + 1}, {_heads(head)})",
                 fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def _heads(head: int | None) -> str:
    return "mean over heads" if head is None else f"head {head}"


def draw_all(maps: AttentionMaps, out_dir: Path, head: int | None = None, photo: np.ndarray | None = None
             ) -> dict[str, list[Path]]:
    """Every figure into ``out_dir``: language.png; relations_layer{i}.png; words_layer{i}.png and
    boxes_layer{i}.png per cross layer; words/layer{i}_{k}_{word}.png per cross layer and word."""
    out_dir = Path(out_dir)
    (out_dir / "words").mkdir(parents=True, exist_ok=True)
    made: dict[str, list[Path]] = {"language": [], "relations": [], "cross": [], "words": []}
    if len(maps.language):
        made["language"].append(save(language_figure(maps, head), out_dir / "language.png"))
    for i in range(len(maps.relations)):
        made["relations"].append(save(relation_figure(maps, i, head, photo), out_dir / f"relations_layer{i + 1}.png"))
    for i in range(len(maps.to_vision)):
        made["cross"].append(save(words_grid_figure(maps, i, head, photo), out_dir / f"words_layer{i + 1}.png"))
        made["cross"].append(save(box_words_figure(maps, i, head), out_dir / f"boxes_layer{i + 1}.png"))
        for k, token in enumerate(maps.tokens):
            made["words"].append(save(word_boxes_figure(maps, i, head, k, photo),
                                      out_dir / "words" / f"layer{i + 1}_{k:02d}_{_slug(token)}.png"))
    return made
