"""``lxmert attention``'s folder: the numbers, every figure and the page of one image and sentence,
built under ``OUT.partial`` and renamed to ``OUT`` when complete (a previous run's folder is
replaced whole, so no figure of another sentence or model stays behind)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from . import attention, figures, page
from .subject import Subject, make_example

PAGE = "attention.html"


def _check_out(out: Path) -> None:
    """``out`` must be new, empty, or a folder this command wrote (it is replaced)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / attention.INFO_FILE).is_file():
        raise ValueError(f"--out {out} holds other files (no {attention.INFO_FILE}): choose a new folder")


def write_report(subject: Subject, store, img_id: str, sentence: str, out: Path, head: int | None = None,
                 photo_file: Path | None = None, truncate: bool = False) -> dict:
    """Write the folder; returns its paths (page, figures, words, numbers, info) and the example."""
    out = Path(out)
    _check_out(out)
    attention.check_head(head, subject.config.num_attention_heads)
    photo = figures.read_image(photo_file) if photo_file is not None else None
    example = make_example(subject, store, img_id, sentence, truncate)
    maps = attention.attention_maps(subject, example, store)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        numbers, info = attention.save(maps, partial)
        made = figures.draw_all(maps, partial, head=head, photo=photo)
        shown = made["language"] + made["relations"] + made["cross"]
        page.write_page(maps, partial / PAGE, shown, photo=photo, head=head)
        if out.exists():
            shutil.rmtree(out)
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    moved = lambda paths: [out / Path(p).relative_to(partial) for p in paths]  # noqa: E731
    return {"page": out / PAGE, "figures": moved(shown), "words": moved(made["words"]), "numbers": out / numbers.name,
            "info": out / info.name, "maps": maps, "example": example}
