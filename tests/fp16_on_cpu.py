"""Run the pre-training job with DeepSpeed's fp16 engine on CPU - FOR TESTS ONLY.

DeepSpeed's CPU accelerator reports fp16 as unsupported unless oneDNN has fp16 kernels, and
``deepspeed.initialize`` then refuses an fp16 config. This wrapper replaces that check with
one that says yes, so the tests can exercise dynamic loss scaling on CPU machines. It is never
used by the shipped code path. With $LIVE_STATE_DIR set it also records the engine's live state
at each checkpoint (tests/live_state.py).
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepspeed.accelerator import get_accelerator  # noqa: E402

get_accelerator().is_fp16_supported = lambda: True  # tests only: see the module docstring

if os.environ.get("LIVE_STATE_DIR"):  # also record the live master weights at each checkpoint
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import live_state  # noqa: E402, F401

from launcher.pretrain import main  # noqa: E402
from launcher.processes import run_job  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_job(main, "lxmert pretrain"))
