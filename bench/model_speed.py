"""Training-step speed of our LXMERT against Hugging Face's ``LxmertForPreTraining``.

Same weights, same batch (8 examples x 20 tokens x 36 regions, the five objectives'
targets), same optimizer (torch AdamW, fused), same thread count; the two models' steps
alternate in one process so that both see the same machine state.

  (a) fp32: both models in fp32.
  (b) bf16: ours as our DeepSpeed engine runs it (bf16 weights and activations,
      fp32 master weights in the optimizer) against HF under torch.autocast(bfloat16).

Prints samples/s of each and the ratio (ours / HF). On a GPU (``--device cuda``) it also
prints peak memory and model FLOPs utilisation.

    python bench/model_speed.py [--steps 6] [--threads N] [--modes fp32,bf16] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from model import LxmertConfig, LxmertForPretraining
from model import weights as W

TOKENS, REGIONS = 20, 36
#: Dense peak FLOP/s by GPU name and mode (bf16 tensor cores; fp32 without TF32, torch's default).
GPU_PEAK = {"H100": {"bf16": 989e12, "fp32": 67e12}, "H200": {"bf16": 989e12, "fp32": 67e12}}


def make_batch(config: LxmertConfig, device: torch.device, batch_size: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    b, t, r = batch_size, TOKENS, REGIONS
    ids = torch.randint(1000, config.vocab_size, (b, t), generator=g)
    labels = torch.full((b, t), -100)
    chosen = torch.rand(b, t, generator=g) < 0.15
    chosen[:, 0] = chosen[:, -1] = False
    chosen[:, 1] |= ~chosen.any(1)  # at least one target per sentence
    labels[chosen] = ids[chosen]
    ids = ids.masked_fill(chosen, 103)
    feats = torch.rand(b, r, config.visual_feat_dim, generator=g)
    masked = (torch.rand(b, r, generator=g) < 0.15).float()
    batch = dict(
        input_ids=ids, attention_mask=torch.ones(b, t, dtype=torch.long), token_type_ids=torch.zeros(b, t, dtype=torch.long),
        visual_feats=feats, visual_pos=torch.rand(b, r, 4, generator=g).sort(-1).values,
        labels=labels, matched_label=torch.randint(0, 2, (b,), generator=g),
        ans=torch.where(torch.arange(b) % 2 == 0, torch.randint(0, config.num_qa_labels, (b,), generator=g), -100),
        obj_labels={
            "obj": (torch.randint(0, config.num_object_labels, (b, r), generator=g), torch.rand(b, r, generator=g)),
            "attr": (torch.randint(0, config.num_attr_labels, (b, r), generator=g), torch.rand(b, r, generator=g)),
            "feat": (feats.clone(), masked),
        },
    )
    return to_device(batch, device)


def to_device(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(to_device(v, device) for v in obj)
    return obj


def build_models(device: torch.device):
    import transformers

    torch.manual_seed(0)
    hf = transformers.LxmertForPreTraining(transformers.LxmertConfig())
    config = LxmertConfig.from_hf_dict(hf.config.to_dict())
    ours = LxmertForPretraining(config)
    copy_weights(hf, ours)
    return hf.to(device), ours.to(device), config


def copy_weights(hf, ours) -> None:
    """Give ours HF's current weights (the timed steps train each model on its own)."""
    state, unknown = W.to_native(hf.state_dict(), W.HF)
    assert not unknown
    ours.load_native_state(state)


class Bf16Master:
    """Our engine's bf16 mode in miniature: bf16 model, fp32 master weights in AdamW."""

    def __init__(self, net: torch.nn.Module, **adam) -> None:
        self.params = [p for p in net.parameters() if p.requires_grad]
        self.master = [p.detach().float().clone().requires_grad_() for p in self.params]
        self.opt = torch.optim.AdamW(self.master, **adam)

    def step(self) -> None:
        for m, p in zip(self.master, self.params):
            m.grad = p.grad.float()
        self.opt.step()
        torch._foreach_copy_([p.data for p in self.params], self.master)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def hf_flops_per_example(hf, batch: dict) -> float:
    """Forward + backward FLOPs of one example through HF's model (torch's FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    hf.train()
    with FlopCounterMode(display=False) as counter:
        hf(**batch).loss.backward()
    hf.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch["input_ids"].shape[0]


def run_mode(mode: str, hf, ours, config, batch, steps: int, device: torch.device) -> dict:
    adam = dict(lr=1e-4, weight_decay=0.01, fused=True)  # torch's fastest AdamW, for both
    hf.train()
    ours.train()
    if mode == "fp32":
        ours_net, hf_opt, ours_opt = ours, torch.optim.AdamW(hf.parameters(), **adam), torch.optim.AdamW(ours.parameters(), **adam)
    else:
        ours_net = ours.to(torch.bfloat16)
        hf_opt, ours_opt = torch.optim.AdamW(hf.parameters(), **adam), Bf16Master(ours_net, **adam)

    def hf_step():
        with torch.autocast(device.type, torch.bfloat16, enabled=mode == "bf16"):
            loss = hf(**batch).loss
        loss.backward()
        hf_opt.step()
        hf_opt.zero_grad(set_to_none=True)
        return loss

    def ours_step():
        loss = ours_net(**batch).loss
        loss.backward()
        ours_opt.step()
        ours_opt.zero_grad()
        return loss

    times = {"hf": [], "ours": []}
    peaks = {"hf": 0, "ours": 0}
    for i in range(steps + 2):  # two warm-up rounds
        for name, step in (("hf", hf_step), ("ours", ours_step)) if i % 2 == 0 else (("ours", ours_step), ("hf", hf_step)):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
                resident = torch.cuda.memory_allocated()
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            if i >= 2:
                times[name].append(time.perf_counter() - start)
                if device.type == "cuda":
                    peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated() - resident)
    b = batch["input_ids"].shape[0]
    result = {name: b / statistics.median(t) for name, t in times.items()}
    result["peak"] = peaks
    if mode == "bf16":
        ours.float()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per model and mode (after 2 warm-up)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--modes", default="fp32,bf16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", default="8", help="batch size, or a comma-separated list")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    hf, ours, config = build_models(device)
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.processor() or platform.machine()}, {args.threads} threads"
    print(f"LXMERT base ({ours.num_parameters():,} parameters), {TOKENS} tokens x {REGIONS} regions, "
          f"torch {torch.__version__}, {where}")
    for batch_size in map(int, args.batch.split(",")):
        batch = make_batch(config, device, batch_size)
        copy_weights(hf, ours)
        flops = hf_flops_per_example(hf, batch)
        hf.eval(), ours.eval()
        with torch.no_grad():
            lh, lo = hf(**batch).loss.item(), ours(**batch).loss.item()
        print(f"batch {batch_size}: HF step {flops / 1e9:.1f} GFLOP per example; loss on the same batch, eval mode: "
              f"HF {lh:.6f}  ours {lo:.6f}  (|diff| {abs(lh - lo):.2e})")
        print(f"{'mode':<6}{'HF samples/s':>14}{'ours samples/s':>16}{'ratio':>8}")
        for mode in args.modes.split(","):
            r = run_mode(mode, hf, ours, config, batch, args.steps, device)
            line = f"{mode:<6}{r['hf']:>14.2f}{r['ours']:>16.2f}{r['ours'] / r['hf']:>7.2f}x"
            if device.type == "cuda":
                name = torch.cuda.get_device_name()
                peak = next((v[mode] for k, v in GPU_PEAK.items() if k in name), None)
                if peak:  # model FLOPs = HF's step FLOPs for both: ours does less work for the same loss
                    line += f"   MFU HF {r['hf'] * flops / peak:.1%} ours {r['ours'] * flops / peak:.1%}"
                line += (f"   step memory above resident: HF {r['peak']['hf'] / 2**30:.2f} GiB"
                         f" ours {r['peak']['ours'] / 2**30:.2f} GiB")
            print(line, flush=True)


if __name__ == "__main__":
    main()
