"""Run the pre-training job recording, at every checkpoint, the engine's live fp32 master
weights - FOR TESTS ONLY.

After each checkpoint every rank takes part in gathering them with DeepSpeed's own accessor
(``safe_get_full_fp32_param``: ZeRO 1, 2 and 3), and rank 0 writes ``$LIVE_STATE_DIR/<tag>.pt``:
{parameter name: tensor}. The tests compare consolidated and converted checkpoints with what the
engine held, not with another conversion. It is never used by the shipped code path.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from launcher import checkpoint  # noqa: E402
from launcher.processes import run_job  # noqa: E402

_save = checkpoint.save


def _save_and_record(engine, ckpt_dir, step, client_state, keep, tag=None):
    from deepspeed.utils import safe_get_full_fp32_param

    saved = _save(engine, ckpt_dir, step, client_state, keep, tag)
    held = {name: safe_get_full_fp32_param(param).detach().clone() for name, param in engine.module.named_parameters()}
    if dist.get_rank() == 0:
        torch.save(held, Path(os.environ["LIVE_STATE_DIR"]) / f"{saved}.pt")
    return saved


checkpoint.save = _save_and_record

from launcher.pretrain import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_job(main, "lxmert pretrain"))
