"""Time one SuperEdit training step (TripletEditTrainer) against the plain InstructPix2Pix step, in one run.

    python benchmarks/superedit_step.py                                   # tiny pipeline on the CPU (smoke)
    python benchmarks/superedit_step.py --device cuda --size sd15 --batch-size 16 --bf16 --checkpointing

Both contenders are ``TripletEditTrainer.training_step`` + ``optimizer.step()`` + the EMA update on the same randomly
initialised pipeline (seeded) and the same batch of random editing rows:

- ``instruct_pix2pix``: the triplet term off (``triplet_loss_start_step`` beyond the run): one UNet call on B rows,
  exactly the diffusers InstructPix2Pix step;
- ``superedit``: the term on from step 0: one UNet call on the doubled batch (2B rows, positive + negative
  instruction).

Sizes: ``tiny`` is the test pipeline (32 px, ``tests/diffusion/helpers.py``); ``sd15`` is SD-1.5 at 512 px: the
diffusers default ``UNet2DConditionModel`` (320/640/1280/1280 channels, 860M parameters) with 8 input channels
and 768-wide cross-attention, the SD ``AutoencoderKL`` and a CLIP ViT-L/14 text encoder (12 layers, 768 wide,
77 tokens), all random. Reported: median step time over ``--steps`` after ``--warmup``, samples/s, peak memory (CUDA
allocator; a forked child's peak RSS on the CPU, helpers shared with ``benchmarks/embeddings.py``) and the ratio
superedit / instruct_pix2pix measured in the same run. Where the UNet dominates the step (SD-1.5 size) the doubled
call should bring the ratio near 0.5; at tiny size the VAE, text encoder and optimizer weigh more.

Status: run on the CPU only (tiny, batch 4: 28.1 vs 25.4 samples/s, ratio 0.90, shared 2-core machine); SD-1.5 on a
GPU not measured yet (no device was lent to the session that wrote it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's hf_contrastive and test helpers first

from hf_contrastive.trainers.triplet_edit import TripletEditConfig, TripletEditTrainer  # noqa: E402
from tests.diffusion.helpers import editing_rows, tiny_clip_tokenizer, tiny_pipeline  # noqa: E402

RESOLUTIONS = {"tiny": 32, "sd15": 512}


def load_module(path: Path, name: str) -> ModuleType:
    """Import a Python file by path (``sys.modules`` holds it: dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def sd15_pipeline(seed: int = 0) -> StableDiffusionInstructPix2PixPipeline:
    """SD-1.5-sized InstructPix2Pix pipeline with random weights (the tokenizer is the tests' letter-level one)."""
    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer(model_max_length=77)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(sample_size=64, in_channels=8, cross_attention_dim=768)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )
    return StableDiffusionInstructPix2PixPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--size", choices=sorted(RESOLUTIONS), default="tiny")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision (frozen modules in bf16)")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing of the UNet")
    parser.add_argument("--isolation", choices=("fork", "none"), default=None, help="default: fork on the CPU")
    parser.add_argument("--json", type=Path, help="append one JSON line per measurement")
    return parser.parse_args(argv)


def build_step(args, contender: str):
    """A closure running one optimizer step of ``contender`` on a fixed collated batch."""
    resolution = RESOLUTIONS[args.size]
    pipeline = tiny_pipeline() if args.size == "tiny" else sd15_pipeline()
    config = TripletEditConfig(
        output_dir=tempfile.mkdtemp(),
        resolution=resolution,
        per_device_train_batch_size=args.batch_size,
        triplet_loss_start_step=0 if contender == "superedit" else 10**9,
        bf16=args.bf16,
        activation_checkpointing=args.checkpointing,
        use_cpu=args.device == "cpu",
        report_to="none",
        max_steps=1,
    )
    rows = editing_rows(args.batch_size, size=resolution)
    trainer = TripletEditTrainer(pipeline, config, train_dataset=rows)
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which this step bypasses
    batch = trainer._prepare_inputs(trainer.data_collator([rows[i] for i in range(args.batch_size)]))
    steps_hook = trainer.callback_handler.callbacks[-1]  # TripletEditSteps: the EMA update

    def step() -> None:
        trainer.training_step(trainer.model, batch)
        trainer.optimizer.step()
        trainer.model.zero_grad(set_to_none=True)
        steps_hook.on_step_end(trainer.args, trainer.state, trainer.control)

    return step


def measure(args, contender: str) -> dict[str, Any]:
    """Median step time, samples/s and peak memory of one contender."""
    helpers = load_module(HERE / "embeddings.py", "benchmark_embeddings")
    device = torch.device(args.device)
    memory = helpers.PeakMemory(device, isolated=_isolation(args) == "fork")
    step = build_step(args, contender)
    seconds = helpers.median_step_seconds(step, device, args.warmup, args.steps)
    peak = memory.peak()
    return {
        "contender": contender,
        "size": args.size,
        "batch_size": args.batch_size,
        "device": args.device,
        "bf16": args.bf16,
        "checkpointing": args.checkpointing,
        "median_step_s": round(seconds, 5),
        "samples_per_s": round(args.batch_size / seconds, 3),
        "peak_memory_mib": None if peak is None else round(peak / 2**20, 1),
        "memory_method": memory.method,
    }


def _isolation(args) -> str:
    return args.isolation or ("fork" if args.device == "cpu" else "none")


def run_contender(args, contender: str) -> dict[str, Any]:
    if _isolation(args) == "fork":
        helpers = load_module(HERE / "embeddings.py", "benchmark_embeddings")
        return helpers.run_isolated(measure, args, contender)
    return measure(args, contender)


def main(argv=None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    plain, superedit = run_contender(args, "instruct_pix2pix"), run_contender(args, "superedit")
    ratio = superedit["samples_per_s"] / plain["samples_per_s"]
    print(
        "| size | batch | bf16 | instruct_pix2pix samples/s | superedit samples/s | speed ratio | MiB (plain / superedit) |"
    )
    print("| --- | ---: | --- | ---: | ---: | ---: | --- |")
    print(
        f"| {args.size} | {args.batch_size} | {args.bf16} | {plain['samples_per_s']} | {superedit['samples_per_s']} | "
        f"{ratio:.2f} | {plain['peak_memory_mib']} / {superedit['peak_memory_mib']} |"
    )
    results = [plain, superedit]
    if args.json:
        with args.json.open("a") as handle:
            handle.writelines(json.dumps(result) + "\n" for result in results)
    return results


if __name__ == "__main__":
    main()
