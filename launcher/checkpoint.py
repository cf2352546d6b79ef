"""Checkpoints: DeepSpeed's ZeRO checkpoints with our client state, the latest COMPLETE one,
keeping the last K, and consolidation into one fp32 model."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from model.pretrained import atomic_write

COMPLETE = "COMPLETE"  # written into a tag folder once every rank has saved
_TAG = re.compile(r"^step(\d+)$")
UNIVERSAL = "_universal"  # suffix of a tag converted to DeepSpeed's universal format
ANSWERS_FILE = "answers.json"  # in a consolidated model: the answer of each answer-head row, in order
BEST = "best-"  # prefix of the tag holding the best weights by the validation metric (best-step<N>)


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def locate(checkpoint: str) -> Path:
    """A local checkpoint file or directory, or a Hugging Face hub model id (``unc-nlp/lxmert-base-uncased``:
    its config, weights and vocab.txt are fetched into the hub cache)."""
    path = Path(checkpoint)
    if path.exists():
        return path
    if re.fullmatch(r"[\w.-]+/[\w.-]+", checkpoint) and not checkpoint.startswith((".", "/")):
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(checkpoint, allow_patterns=["*.json", "*.safetensors", "*.bin", "vocab.txt"]))
        except Exception as exc:  # offline, unknown id, no access: one clear line
            raise FileNotFoundError(f"{checkpoint}: no such local checkpoint, and the Hugging Face hub did not provide "
                                    f"it ({type(exc).__name__})") from None
    raise FileNotFoundError(f"{checkpoint}: no such checkpoint file or directory")


def vocab_file(tokenizer: str) -> str | None:
    """The vocab.txt behind a tokenizer argument (a file or a folder), copied next to consolidated models."""
    path = Path(tokenizer).resolve()
    path = path / "vocab.txt" if path.is_dir() else path
    return str(path) if path.is_file() else None


def complete_tags(ckpt_dir: Path) -> list[str]:
    """Tags with a COMPLETE marker, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    tags = [(int(m[1]), p.name) for p in ckpt_dir.iterdir() if (m := _TAG.match(p.name)) and (p / COMPLETE).exists()]
    return [name for _, name in sorted(tags)]


def best_tag(ckpt_dir: Path) -> str | None:
    """The complete ``best-step<N>`` tag, if any (the latest, should an older one have survived a crash)."""
    tags = [(int(p.name[len(BEST) + 4:]), p.name) for p in Path(ckpt_dir).glob(BEST + "step*")
            if p.name[len(BEST) + 4:].isdigit() and (p / COMPLETE).exists()]
    return max(tags)[1] if tags else None


def save(engine, ckpt_dir: Path, step: int, client_state: dict, keep: int, tag: str | None = None) -> str:
    """Save on every rank; mark complete and prune old tags on rank 0 once all ranks are done.

    ``tag=BEST``: the best weights so far, as ``best-step<N>``; the previous best is removed only
    once the new one is complete. Best tags are never resumed from and never pruned by ``keep``."""
    best = tag == BEST
    tag = f"{BEST if best else ''}step{step}"
    if dist.get_rank() == 0 and (ckpt_dir / tag).exists():  # saved before (a run resumed from an earlier tag):
        shutil.rmtree(ckpt_dir / tag)  # never rewrite files in place under a COMPLETE marker
    dist.barrier()
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client_state, save_latest=not best)
    dist.barrier()
    if dist.get_rank() == 0:
        (ckpt_dir / tag / COMPLETE).write_text(f"{step}\n")
        old = [p.name for p in ckpt_dir.glob(BEST + "step*") if p.name != tag] if best else complete_tags(ckpt_dir)[:-keep]
        for name in old:
            shutil.rmtree(ckpt_dir / name, ignore_errors=True)
    dist.barrier()
    return tag


def resolve_resume(ckpt_dir: Path, resume: str | None) -> str | None:
    """``None``/"none": start fresh; "auto": the latest complete tag, if any; else that tag
    (a ``stepN_universal`` tag made by :func:`to_universal` resumes at another world size)."""
    if resume in (None, "none"):
        return None
    tags = complete_tags(ckpt_dir)
    if resume == "auto":
        return tags[-1] if tags else None
    if resume.endswith(UNIVERSAL) and (ckpt_dir / resume / COMPLETE).exists():
        return resume
    if resume not in tags:
        raise ValueError(f"--resume {resume}: no complete checkpoint of that tag in {ckpt_dir} (complete: {tags or 'none'})")
    return resume


def check_uniform_precision(tag_dir: Path) -> None:
    """Refuse a tag holding optimizer shards of several precisions (saved twice with different configs)."""
    kinds = {re.sub(r"zero_pp_rank_\d+_mp_rank_\d+_optim_states\.pt$", "", p.name) for p in tag_dir.glob("*optim_states.pt")}
    if len(kinds) > 1:
        raise ValueError(f"{tag_dir}: optimizer shards of mixed precision ({sorted(k or 'fp32' for k in kinds)}); "
                         f"keep one run's shards per tag")


def to_universal(ckpt_dir: Path, tag: str | None = None) -> str:
    """Convert a complete ZeRO checkpoint into DeepSpeed's universal format (``<tag>_universal``),
    which a run of another data-parallel size resumes from with ``--resume <tag>_universal``."""
    import subprocess
    import sys

    ckpt_dir = Path(ckpt_dir)
    tag = tag or (complete_tags(ckpt_dir) or [None])[-1]
    if tag is None or not (ckpt_dir / tag / COMPLETE).exists():
        raise FileNotFoundError(f"{ckpt_dir}: no complete checkpoint{f' {tag}' if tag else ''}")
    check_uniform_precision(ckpt_dir / tag)
    out = ckpt_dir / (tag + UNIVERSAL)
    partial = ckpt_dir / (tag + UNIVERSAL + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    result = subprocess.run([sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder",
                             str(ckpt_dir / tag), "--output_folder", str(partial)], capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise ValueError(f"{ckpt_dir / tag}: conversion to a universal checkpoint failed: "
                         f"{(result.stderr.strip().splitlines() or ['?'])[-1]}")
    (partial / COMPLETE).write_text(tag + "\n")
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return out.name


def model_states_file(tag_dir: Path) -> Path:
    """Rank 0's model-states file: ``mp_rank_00_model_states.pt`` (ZeRO 1/2) or
    ``zero_pp_rank_0_mp_rank_00_model_states.pt`` (ZeRO-3)."""
    for name in ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_model_states.pt"):
        if (tag_dir / name).exists():
            return tag_dir / name
    raise FileNotFoundError(f"{tag_dir}: no model states file (not a DeepSpeed checkpoint?)")


def consolidate(ckpt_dir: Path, out_dir: Path, tag: str | None = None, hf: bool = False) -> Path:
    """One fp32 model (safetensors + config) from a ZeRO 1/2/3 checkpoint, through DeepSpeed's
    zero_to_fp32; the model config comes from the checkpoint's client state."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    import model as models
    from model import LxmertConfig

    ckpt_dir = Path(ckpt_dir)
    tag = tag or (complete_tags(ckpt_dir) or [None])[-1]
    if tag is None:
        raise FileNotFoundError(f"{ckpt_dir}: no complete checkpoint")
    tag_dir = ckpt_dir / tag
    if not (tag_dir / COMPLETE).exists():
        raise ValueError(f"{tag_dir}: not a complete checkpoint")
    check_uniform_precision(tag_dir)
    client = torch.load(model_states_file(tag_dir), map_location="cpu", weights_only=False)
    config = LxmertConfig.from_dict(client["model_config"])
    state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag)
    model = getattr(models, client.get("architecture", "LxmertForPretraining"))(config)
    model.load_native_state({k: v.float() for k, v in state.items()}, source=str(tag_dir))
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, hf=hf)
    vocab = client.get("tokenizer_vocab")
    if vocab and Path(vocab).is_file():
        shutil.copyfile(vocab, out_dir / "vocab.txt")
    if client.get("answers"):  # the answer of each row of the answer head (fine-tuning maps its labels onto them)
        text = json.dumps(client["answers"]) + "\n"
        atomic_write(out_dir / ANSWERS_FILE, lambda p: Path(p).write_text(text))
    return out_dir
