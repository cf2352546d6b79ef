"""The data layer's files: JSON inputs read with one-line errors, atomic writes, and the manifests
of built directories (feature stores, corpora), written last and read with the reason a directory
is not complete."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


def read_json(path: str | os.PathLike, what: str) -> Any:
    """The JSON of ``path``; a ValueError naming the file and ``what`` it should be otherwise."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: unreadable {what} ({exc})") from None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write under a temporary name, then rename: a reader sees the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@contextmanager
def building(out: Path) -> Iterator[Path]:
    """A fresh ``OUT.partial`` to build into (one left by a killed build is removed first), removed
    again if the build fails; a build completes with :func:`publish`."""
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def publish(partial: Path, out: Path, manifest: dict) -> None:
    """Complete a build: the manifest written last into ``partial``, then ``partial`` renamed to ``out``."""
    atomic_write_text(partial / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)


def read_manifest(path: str | os.PathLike, what: str, fmt: str) -> dict:
    """The manifest of a complete ``what`` (e.g. "feature store") of format ``fmt`` at ``path``."""
    path = Path(path)
    if not path.is_dir():
        partial = path.with_name(path.name + ".partial")
        hint = f" ({partial} is an unfinished build)" if partial.exists() else ""
        raise FileNotFoundError(f"{path}: no such {what}{hint}")
    if not (path / MANIFEST).is_file():
        raise FileNotFoundError(f"{path}: no {MANIFEST}: not a complete {what} (interrupted build?)")
    manifest = read_json(path / MANIFEST, f"{what} manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ValueError(f"{path / MANIFEST}: format {found!r}, expected {fmt!r}")
    return manifest
