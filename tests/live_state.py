"""Run the pre-training job recording, at every checkpoint, the engine's live fp32 master
weights - FOR TESTS ONLY.

After each checkpoint every rank takes part in gathering them with DeepSpeed's own accessor
(``safe_get_full_fp32_param``: ZeRO 1, 2 and 3), and rank 0 writes ``$LIVE_STATE_DIR/<tag>.pt``:
{parameter name: tensor}; with $LIVE_STATE_MOMENTS (ZeRO 1 and 2) also Adam's moments, under
"<parameter name>/exp_avg" and "<parameter name>/exp_avg_sq". The tests compare consolidated and converted checkpoints with what the
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
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    saved = _save(engine, ckpt_dir, step, client_state, keep, tag)
    params = list(engine.module.named_parameters())
    held = {name: safe_get_full_fp32_param(param).detach().clone() for name, param in params}
    if os.environ.get("LIVE_STATE_MOMENTS"):  # ZeRO 1/2: Adam's moments too, as "<name>/exp_avg" etc.
        # DeepSpeed links the moments to this accessor once, lazily, and here it had linked them
        # before the optimizer state held them ("exp_avg not found"): link them again
        engine.optimizer._hp_optimizer_states_linked = False
        engine.optimizer._lazy_init_hp_params_optimizer_state()
        for key in ("exp_avg", "exp_avg_sq"):
            held.update({f"{name}/{key}": safe_get_full_optimizer_state(param, key).detach().clone()
                         for name, param in params})
    if dist.get_rank() == 0:
        torch.save(held, Path(os.environ["LIVE_STATE_DIR"]) / f"{saved}.pt")
    return saved


checkpoint.save = _save_and_record

from launcher.pretrain import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_job(main, "lxmert pretrain"))
