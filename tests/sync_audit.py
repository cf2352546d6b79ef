"""Run ``launcher/pretrain.py`` recording every host synchronisation point - FOR TESTS ONLY.

On a GPU, ``Tensor.item()``, ``bool(t)``, ``float(t)``, ``.tolist()``, ``.cpu()``, ``.numpy()`` and
``.nonzero()`` (its output's size depends on the values) wait for the device. On the CPU they do
not, but they are the same calls: this wrapper counts each one made by our code (launcher/,
model/) or by DeepSpeed, with its call site and the number of training micro steps done so far,
and writes ``$SYNC_AUDIT_DIR/syncs-<pid>.json``:
{"steps": micro steps, "sites": {"path:line function": [step counter of each call, ...]}}.
It is never used by the shipped code path.
"""

import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from launcher import loop, processes  # noqa: E402

AUDIT = Path(os.environ.get("SYNC_AUDIT_DIR", "."))
TORCH = str(Path(torch.__file__).parent)
OURS = {str(ROOT / part): part for part in ("launcher", "model")}
SITES: dict[str, list[int]] = defaultdict(list)
STEPS = [0]


def _site() -> str | None:
    """The first caller outside torch and this file: ours or DeepSpeed's, else None."""
    frame = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename.startswith(TORCH) or frame.f_code.co_filename == __file__):
        frame = frame.f_back
    if frame is None:
        return None
    path = frame.f_code.co_filename
    for prefix, part in OURS.items():
        if path.startswith(prefix):
            return f"{part}{path[len(prefix):]}:{frame.f_lineno} {frame.f_code.co_name}"
    if "/deepspeed/" in path:
        return f"deepspeed/{path.split('/deepspeed/', 1)[1]}:{frame.f_lineno} {frame.f_code.co_name}"
    return None


def _recorded(name: str):
    original = getattr(torch.Tensor, name)

    def call(self, *args, **kwargs):
        site = _site()
        if site is not None:
            SITES[f"{site} [{name}]"].append(STEPS[0])
        return original(self, *args, **kwargs)

    return call


def _beat() -> None:  # the loop calls it once per training micro step
    STEPS[0] += 1
    _shipped_beat()


_shipped_beat = loop.beat

if __name__ == "__main__":
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy", "nonzero"):
        setattr(torch.Tensor, name, _recorded(name))
    loop.beat = _beat
    from launcher.pretrain import main

    status = processes.run_job(main, "lxmert pretrain")
    (AUDIT / f"syncs-{os.getpid()}.json").write_text(json.dumps({"steps": STEPS[0], "sites": SITES}, indent=1))
    sys.exit(status)
