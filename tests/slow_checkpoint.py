"""Run the pre-training job with every checkpoint file write followed by a pause - FOR TESTS ONLY.

A checkpoint of the tiny model is written in milliseconds, too fast for a test to kill the job
while it is being written. This wrapper makes DeepSpeed's file writer sleep SLOW_SAVE_SECONDS
after each file, so that the test can send a real SIGKILL while a checkpoint folder exists
without its COMPLETE marker, and so that a known pause can be found in throughput.json's
checkpoint_seconds. It is never used by the shipped code path.
"""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine  # noqa: E402

_save = TorchCheckpointEngine.save


def _slow_save(self, state_dict, path: str):
    _save(self, state_dict, path)
    time.sleep(float(os.environ.get("SLOW_SAVE_SECONDS", "1")))  # tests only: see the module docstring


TorchCheckpointEngine.save = _slow_save

from launcher.processes import run_job  # noqa: E402
from launcher.pretrain import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_job(main, "lxmert pretrain"))
