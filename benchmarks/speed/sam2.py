"""Speed and size: SAM 2 (reference §7.2) on CPU, LoRA parameter counts, GPU memory estimate.

- Speed: for ``test-tiny`` and the real ``tiny`` architecture (random weights written by
  ``init_weights``: speed only, the masks mean nothing), in a fresh process per size, the median
  wall time of encoding one 1024×1024 frame (:meth:`Sam2Prompter.set_image` on a new image,
  preprocessing included) and of one prompt on the cached embeddings (two points and the
  previous mask logits, mapped back to the image), and the process's peak RSS (``VmHWM``).
- LoRA: parameters of the full SAM 2 model (image encoder, prompt encoder, mask decoder and
  memory) and those that train with the seed's LoRA (every encoder ``qkv``, r = 32, α = 32,
  bias ``lora_only``) and with the mask decoder's attention adapted too, for every size
  (built on the ``meta`` device: no memory, no weights).
- GPU memory: :func:`retinaseg.models.sam2.footprint.gpu_memory_estimate` for LoRA training on
  T frames and propagation through T frames, float32, batch 1.
- ``--gpu`` (only on a machine with CUDA): measured peak GPU memory of LoRA training of the
  single-image model with T frames as one batch (encoder + prompt encoder + mask decoder,
  forward and backward), against the same terms of the estimate. Writes ``sam2_gpu``.

Writes ``benchmarks/results/sam2.{md,json}``.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/speed/sam2.py [--repeats 3]
    PYTHONPATH=src python benchmarks/speed/sam2.py --gpu      # on a CUDA machine
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common

import torch
from common import md_table, publish

from retinaseg.models.sam2.config import SIZES, video_config
from retinaseg.models.sam2.footprint import GIB, gpu_memory_estimate
from retinaseg.models.sam2.lora import LoraSettings, apply_lora, parameter_counts

SPEED_SIZES = ("test-tiny", "tiny")
TRAIN_FRAMES = (1, 4, 8)
PROPAGATE_FRAMES = (8, 64)

CHILD = """
import json, sys, time
import numpy as np
import torch
def hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
from retinaseg.models.sam2 import Sam2Prompter
folder, repeats = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
frames = [rng.integers(0, 256, (1024, 1024), dtype=np.uint8) for _ in range(repeats + 1)]
t0 = time.perf_counter()
p = Sam2Prompter(folder, cache_size=1)
load_s = time.perf_counter() - t0
enc = []
for img in frames:
    t0 = time.perf_counter(); p.set_image(img); enc.append(time.perf_counter() - t0)
first = p.predict([[512, 512]], [1])
dec = []
for _ in range(20):
    t0 = time.perf_counter()
    p.predict([[512, 512], [100, 900]], [1, 0], mask_input=first.low_res_logits)
    dec.append(time.perf_counter() - t0)
print(json.dumps({"encode_s": float(np.median(enc[1:])), "prompt_s": float(np.median(dec[1:])),
                  "load_s": load_s, "threads": torch.get_num_threads(), "peak_rss_mb": hwm_mb()}))
"""


def speed(repeats: int) -> dict[str, dict]:
    """Encode and prompt times and peak RSS per size, each in a fresh process."""
    from retinaseg.models.sam2.weights import init_weights

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in SPEED_SIZES:
            folder = init_weights(size, Path(tmp) / size)
            res = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(repeats)],
                                 capture_output=True, text=True, check=True)
            out[size] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def lora_counts() -> dict[str, dict]:
    """Parameter counts of every size with the seed's LoRA and with the decoder adapted too."""
    from transformers import Sam2VideoModel

    out = {}
    for size in SIZES:
        row = {}
        for key, settings in (("seed", LoraSettings()),
                              ("with_decoder", LoraSettings(mask_decoder=True))):
            with torch.device("meta"):
                model = apply_lora(Sam2VideoModel(video_config(size)), settings)
            row[key] = parameter_counts(model)
        with torch.device("meta"):
            row["base"] = sum(p.numel() for p in Sam2VideoModel(video_config(size)).parameters())
        out[size] = row
    return out


def estimates() -> dict[str, dict]:
    out: dict[str, dict] = {}
    for size in SIZES[:4]:
        out[size] = {f"train_{t}": gpu_memory_estimate(size, t).total_gib for t in TRAIN_FRAMES}
        out[size].update({f"propagate_{t}": gpu_memory_estimate(size, t, training=False).total_gib
                          for t in PROPAGATE_FRAMES})
    return out


def gpu_measure() -> dict[str, dict]:
    """Peak CUDA memory of the image model: a LoRA training step on T frames (one batch), and
    encoding T frames one by one keeping their embeddings (the image part of propagation)."""
    from retinaseg.models.sam2.build import build_sam2

    out: dict[str, dict] = {}
    for size in SIZES[:4]:
        model = build_sam2(size, lora=True).cuda().train()
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-6)
        for t in TRAIN_FRAMES:
            _reset()
            x = torch.randn(t, 3, 1024, 1024, device="cuda")
            pts = torch.full((t, 1, 1, 2), 512.0, device="cuda")
            lab = torch.ones(t, 1, 1, dtype=torch.long, device="cuda")
            for _ in range(2):  # the second step holds Adam's moments too
                opt.zero_grad(set_to_none=True)
                res = model(pixel_values=x, input_points=pts, input_labels=lab,
                            multimask_output=False)
                res.pred_masks.float().sigmoid().mean().backward()
                opt.step()
            estimate = gpu_memory_estimate(size, t, memory=False, overhead_gib=0).total_gib
            out.setdefault(size, {})[f"train {t}"] = {"measured_gib": _peak(),
                                                      "estimate_gib": estimate}
            del x, res
        opt.zero_grad(set_to_none=True)
        del opt
        model.eval()
        for t in PROPAGATE_FRAMES:
            _reset()
            with torch.no_grad():
                kept = [model.get_image_embeddings(torch.randn(1, 3, 1024, 1024, device="cuda"))
                        for _ in range(t)]
            estimate = gpu_memory_estimate(size, t, training=False, memory=False,
                                           overhead_gib=0).total_gib
            out[size][f"encode {t}"] = {"measured_gib": _peak(), "estimate_gib": estimate}
            del kept
        del model
    return out


def _reset() -> None:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def _peak() -> float:
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / GIB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed encodings per size")
    ap.add_argument("--gpu", action="store_true", help="measure GPU memory (needs CUDA)")
    a = ap.parse_args()
    if a.gpu:
        raw = gpu_measure()
        rows = [[size, *case.split(), f"{v['measured_gib']:.2f}", f"{v['estimate_gib']:.2f}",
                 f"{v['estimate_gib'] / v['measured_gib']:.2f}"]
                for size, per in raw.items() for case, v in per.items()]
        body = ("Peak GPU memory (`torch.cuda.max_memory_allocated`) of the single-image SAM 2 "
                "model with random weights, float32: `train`, a LoRA training step (seed's LoRA, "
                "Adam; the second step, which holds the moments) on T frames of 1024×1024 as "
                "one batch, one point each; `encode`, T frames encoded one by one without "
                "gradients, their embeddings kept. Estimate: the matching terms of "
                "`gpu_memory_estimate` (image model only: no memory attention or memory "
                "encoder, no CUDA overhead).\n\n"
                f"{torch.cuda.get_device_name()}, torch {torch.__version__}\n\n"
                + md_table(["size", "mode", "frames T", "measured GiB", "estimate GiB",
                            "estimate / measured"], rows))
        publish("sam2_gpu", "SAM 2: measured GPU memory of LoRA training", body, raw)
        return
    sp, counts, est = speed(a.repeats), lora_counts(), estimates()
    speed_rows = [[size, f"{v['encode_s']:.3f}", f"{v['prompt_s'] * 1e3:.1f}",
                   f"{v['peak_rss_mb']:.0f}", f"{v['load_s']:.2f}", v["threads"]]
                  for size, v in sp.items()]
    count_rows = []
    for size, row in counts.items():
        for key, label in (("seed", "seed (encoder qkv)"), ("with_decoder", "+ mask decoder")):
            trainable, total = row[key]
            count_rows.append([size, label, f"{row['base']:,}", f"{trainable:,}",
                               f"{100 * trainable / total:.2f} %"])
    est_rows = [[size, *(f"{v[f'train_{t}']:.1f}" for t in TRAIN_FRAMES),
                 *(f"{v[f'propagate_{t}']:.1f}" for t in PROPAGATE_FRAMES)]
                for size, v in est.items()]
    body = (
        "CPU speed of SAM 2 with random weights (speed only): median wall time per 1024×1024 "
        f"frame of {a.repeats} encodings after a warm-up (preprocessing included) and of 19 "
        "prompts on cached embeddings (two points and the previous mask logits; output mapped "
        "to 1024×1024), fresh process per size; peak RSS of that process.\n\n"
        + md_table(["size", "encode s / frame", "prompt ms (cached)", "peak RSS MB",
                    "load s", "threads"], speed_rows)
        + "\n\nParameters with LoRA (r = 32, α = 32, bias `lora_only`) on the full SAM 2 "
        "(video) model; fraction of all parameters, adapters included:\n\n"
        + md_table(["size", "LoRA on", "base parameters", "trainable", "trainable fraction"],
                   count_rows)
        + "\n\nEstimated GPU memory (GiB, float32, batch 1, 0.5 GiB CUDA overhead included) "
        "from the model dimensions (`gpu_memory_estimate`; formula in "
        "`retinaseg/models/sam2/footprint.py`): LoRA training on a sequence of T frames, and "
        "propagation through T frames:\n\n"
        + md_table(["size", *(f"train T={t}" for t in TRAIN_FRAMES),
                    *(f"propagate T={t}" for t in PROPAGATE_FRAMES)], est_rows))
    publish("sam2", "SAM 2: CPU speed, LoRA parameters, GPU memory estimate", body,
            {"speed": sp, "lora": counts, "gpu_estimate_gib": est})


if __name__ == "__main__":
    main()
