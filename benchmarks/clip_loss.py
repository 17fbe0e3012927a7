"""Time one CLIP training step with our CLIPLoss (MultiModalTrainer) against open_clip's ClipLoss, in one run.

    python benchmarks/clip_loss.py                                            # tiny and small CLIP on the CPU
    python benchmarks/clip_loss.py --device cuda --sizes small,base --batch-size 256 --bf16
    python benchmarks/clip_loss.py --sizes tiny --batch-size 8 --steps 1 --warmup 0 --json out.jsonl   # smoke

Both contenders train the same randomly initialised ``CLIPModel`` (same seed, same config) on the same batch of
random images and digit captions, with AdamW at the same settings, and the same feature calls
(``image_embeddings`` / ``text_embeddings``):

- ``open_clip``: a plain PyTorch step around ``open_clip.loss.ClipLoss(local_loss=True, gather_with_grad=True)``
  (the setting open_clip recommends at scale; ``open_clip/loss.py`` is loaded by file path, since ``import
  open_clip`` needs torchvision); without open_clip installed, a plain PyTorch symmetric cross-entropy
  (``reference``) takes its place;
- ``ours``: ``MultiModalTrainer.training_step`` (the objective's temperature, its gradient averaging and clamp, the
  Trainer's autocast and backward) + ``optimizer.step()`` + ``zero_grad``.

Processing the images and captions happens before the timer, for both. Reported: median step time over ``--steps``
after ``--warmup``, images/s, peak memory (CUDA allocator, or a forked child's peak RSS on the CPU; helpers shared
with ``benchmarks/embeddings.py``) and the ratios ours / peer, measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F

from hf_contrastive.data.images import CAPTION_TEMPLATES, DIGIT_WORDS, digit_caption
from hf_contrastive.models.clip import clip_processor, image_embeddings, small_clip, text_embeddings
from hf_contrastive.models.tokenizer import train_wordpiece_tokenizer
from hf_contrastive.objectives.clip import CLIPLoss
from hf_contrastive.trainers.multimodal import MultiModalConfig, MultiModalTrainer

HERE = Path(__file__).resolve().parent
SIZES = {
    "tiny": {"image_size": 32, "patch_size": 8, "hidden_size": 64, "num_layers": 2, "num_heads": 2},
    "small": {"image_size": 64, "patch_size": 8, "hidden_size": 256, "num_layers": 4, "num_heads": 4},
    "base": {"image_size": 224, "patch_size": 16, "hidden_size": 768, "num_layers": 12, "num_heads": 12},
}
CAPTIONS = [digit_caption(label, template) for label in range(10) for template in CAPTION_TEMPLATES]


def load_module(path: Path, name: str) -> ModuleType:
    """Import a Python file by path (``sys.modules`` holds it: dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def open_clip_loss_class() -> type | None:
    """``ClipLoss`` from the installed ``open_clip/loss.py``, or None when open_clip_torch is not installed."""
    spec = importlib.util.find_spec("open_clip")  # finds the package folder without running its __init__
    if spec is None or not spec.submodule_search_locations:
        return None
    return load_module(Path(next(iter(spec.submodule_search_locations))) / "loss.py", "open_clip_loss").ClipLoss


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--sizes", default="tiny,small", help=f"comma-separated, of {sorted(SIZES)}")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for both contenders")
    parser.add_argument("--isolation", choices=("fork", "none"), default=None, help="default: fork on the CPU")
    parser.add_argument("--json", type=Path, help="append one JSON line per measurement")
    return parser.parse_args(argv)


def build_inputs(size: str, batch_size: int):
    """Tokenizer, processor and one batch of random images with captions (rows for the collator)."""
    tokenizer = train_wordpiece_tokenizer(CAPTIONS + list(DIGIT_WORDS), vocab_size=300, model_max_length=32)
    processor = clip_processor(tokenizer, image_size=SIZES[size]["image_size"])
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch_size, 28, 28, 3), dtype=torch.uint8, generator=generator).numpy()
    rows = [{"image": images[i], "text": CAPTIONS[i % len(CAPTIONS)]} for i in range(batch_size)]
    return tokenizer, processor, rows


def peer_runner(args, size: str, device: torch.device) -> tuple[str, Callable[[], None]]:
    """One plain-PyTorch CLIP step with open_clip's loss (or the reference loss)."""
    tokenizer, processor, rows = build_inputs(size, args.batch_size)
    model = small_clip(tokenizer, seed=0, projection_dim=SIZES[size]["hidden_size"], **SIZES[size]).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    inputs = processor(
        text=[r["text"] for r in rows], images=[r["image"] for r in rows], return_tensors="pt", padding=True
    )
    inputs = {key: value.to(device) for key, value in inputs.items()}
    loss_class = open_clip_loss_class()
    name = "open_clip" if loss_class is not None else "reference"
    open_clip_loss = loss_class(local_loss=True, gather_with_grad=True) if loss_class is not None else None
    max_log_scale = math.log(100.0)

    def loss_fn(images: torch.Tensor, texts: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        if open_clip_loss is not None:
            return open_clip_loss(images, texts, scale)
        labels = torch.arange(len(images), device=images.device)
        logits = scale * images @ texts.T
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            images = F.normalize(image_embeddings(model, inputs["pixel_values"]), dim=-1)
            texts = F.normalize(text_embeddings(model, inputs["input_ids"], inputs["attention_mask"]), dim=-1)
            loss = loss_fn(images.float(), texts.float(), model.logit_scale.exp())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            model.logit_scale.clamp_(0, max_log_scale)

    return name, step


def ours_runner(args, size: str, device: torch.device) -> tuple[str, Callable[[], None]]:
    """One ``MultiModalTrainer.training_step`` + optimizer step with ``CLIPLoss``."""
    tokenizer, processor, rows = build_inputs(size, args.batch_size)
    model = small_clip(tokenizer, seed=0, projection_dim=SIZES[size]["hidden_size"], **SIZES[size])
    config = MultiModalConfig(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=args.batch_size,
        learning_rate=1e-4,
        weight_decay=0.1,
        optim="adamw_torch",
        bf16=args.bf16,
        use_cpu=device.type == "cpu",
        report_to="none",
        max_steps=1,
    )
    trainer = MultiModalTrainer(model, config, processing_class=processor, objective=CLIPLoss())
    trainer.create_optimizer()
    batch = trainer._prepare_inputs(trainer.data_collator(rows))

    def step() -> None:
        trainer.training_step(trainer.model, batch)
        trainer.optimizer.step()
        for callback in trainer.callback_handler.callbacks:  # objective zero_grad and log-scale clamp
            callback.on_optimizer_step(trainer.args, trainer.state, trainer.control)
        trainer.model.zero_grad(set_to_none=True)

    return "ours", step


def measure(args, runner: Callable, size: str) -> dict[str, Any]:
    """Median step time, images/s and peak memory of one contender."""
    helpers = load_module(HERE / "embeddings.py", "benchmark_embeddings")
    device = torch.device(args.device)
    memory = helpers.PeakMemory(
        device, isolated=(args.isolation or ("fork" if device.type == "cpu" else "none")) == "fork"
    )
    name, step = runner(args, size, device)
    seconds = helpers.median_step_seconds(step, device, args.warmup, args.steps)
    peak = memory.peak()
    return {
        "contender": name,
        "size": size,
        "batch_size": args.batch_size,
        "device": args.device,
        "bf16": args.bf16,
        "median_step_s": round(seconds, 5),
        "images_per_s": round(args.batch_size / seconds, 2),
        "peak_memory_mib": None if peak is None else round(peak / 2**20, 1),
        "memory_method": memory.method,
    }


def run_contender(args, runner: Callable, size: str) -> dict[str, Any]:
    isolation = args.isolation or ("fork" if args.device == "cpu" else "none")
    if isolation == "fork":
        helpers = load_module(HERE / "embeddings.py", "benchmark_embeddings")
        return helpers.run_isolated(measure, args, runner, size)
    return measure(args, runner, size)


def main(argv=None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    results = []
    print("| size | peer | peer img/s | ours img/s | speed ours/peer | peer MiB | ours MiB | memory ours/peer |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size in args.sizes.split(","):
        peer, ours = run_contender(args, peer_runner, size), run_contender(args, ours_runner, size)
        results += [peer, ours]
        speed = ours["images_per_s"] / peer["images_per_s"]
        memory = (
            ours["peak_memory_mib"] / peer["peak_memory_mib"]
            if ours["peak_memory_mib"] and peer["peak_memory_mib"]
            else float("nan")
        )
        print(
            f"| {size} | {peer['contender']} | {peer['images_per_s']} | {ours['images_per_s']} | {speed:.2f} | "
            f"{peer['peak_memory_mib']} | {ours['peak_memory_mib']} | {memory:.2f} |"
        )
    if args.json:
        with args.json.open("a") as handle:
            handle.writelines(json.dumps(result) + "\n" for result in results)
    return results


if __name__ == "__main__":
    main()
