"""SuperEdit's triplet term vs plain InstructPix2Pix on synthetic shape edits: does the UNet tell right from wrong
instructions?

Run from the repository root (offline, CPU; the model card's table came from the first command)::

    OMP_NUM_THREADS=1 python recipes/superedit_shapes.py                  # writes model_cards/superedit-shapes.md
    OMP_NUM_THREADS=1 python recipes/superedit_shapes.py --small --output-dir /tmp/smoke   # < 30 s, no card

Data (:mod:`hf_contrastive.data.shapes`): coloured circles, squares and triangles on a 2 x 2 grid, edited by one of
"make the red circle blue", "move the red circle to the top right", "add a blue square at the bottom left", "remove
the red circle"; three wrong instructions per row from :class:`~hf_contrastive.data.editing.RuleBasedNegatives`
(another colour or kind, swapped colours, left <-> right, top <-> bottom, add <-> remove). Training and held-out rows
come from different seeds.

Model: a tiny ``StableDiffusionInstructPix2PixPipeline`` built from configs and trained from scratch: a random
frozen VAE (32 x 32 pixels -> 4 x 16 x 16 latents) whose ``scaling_factor`` is set to 1 / std of its latents on
training images (how Stable Diffusion's 0.18215 was chosen; with the default the edit would be 4% of the noise),
a random frozen 2-layer CLIP text encoder over a word-level CLIP tokenizer, a 2-level UNet with cross-attention
(8 input channels), the DDPM scheduler, epsilon targets. Only the UNet trains.

Methods: :class:`~hf_contrastive.trainers.triplet_edit.TripletEditTrainer` with the triplet weight 0 (plain
InstructPix2Pix: the denoising MSE) and with the triplet term, from the same initial pipeline, data, seeds, steps and
optimizer (AdamW, constant learning rate, conditioning dropout 0.05, no EMA so that the trained weights are scored).
The margin is larger than the paper's 5e-4 (``--margin``): from scratch the per-sample distances start near 1, not
near 0.1 as for a pretrained SD-1.5 UNet.

Metric (the spec's reproduction target without GPT-4o): on held-out rows, for every wrong instruction and fixed
timesteps ``t`` with fixed noise, ``d_pos`` / ``d_neg`` = the per-sample mean squared error of the noise predicted
under the right / wrong instruction (no conditioning dropout); reported are ``mean(d_pos)`` (denoising quality),
``gap = mean(d_neg - d_pos)`` and the share of (row, wrong instruction, t) with ``d_neg > d_pos``, every
``--eval-every`` steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout this recipe belongs to

from hf_contrastive.data.shapes import CELLS, SHAPE_COLOURS, SHAPE_KINDS, shape_edit_dataset  # noqa: E402
from hf_contrastive.hub.card import metrics_table, write_run_report  # noqa: E402
from hf_contrastive.objectives.superedit import per_sample_distance  # noqa: E402
from hf_contrastive.trainers.triplet_edit import TripletEditConfig, TripletEditTrainer  # noqa: E402

CARD = "model_cards/superedit-shapes.md"
METHODS = ("InstructPix2Pix (MSE only)", "SuperEdit (MSE + triplet)")
METRICS = ("d_pos", "d_neg", "gap", "d_neg > d_pos")
SMALL = {"steps": 6, "eval_every": 3, "train_rows": 64, "test_rows": 8, "seeds": [0], "batch_size": 8}
INSTRUCTION_WORDS = ("make", "move", "add", "remove", "the", "a", "to", "at")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400, help="Optimizer steps per run.")
    parser.add_argument("--eval-every", type=int, default=100, help="Score the held-out rows every N steps.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--train-rows", type=int, default=4000)
    parser.add_argument("--test-rows", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--margin", type=float, default=0.05, help="Triplet margin m on per-sample mean distances.")
    parser.add_argument("--weight", type=float, default=1.0, help="Triplet weight lambda.")
    parser.add_argument("--start-step", type=int, default=0, help="First (global) step with the triplet term.")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[50, 150, 300], help="Fixed t of the metric.")
    parser.add_argument("--small", action="store_true", help="A seconds-long smoke run (no model card).")
    parser.add_argument("--output-dir", default="outputs/superedit_shapes")
    parser.add_argument("--card", default=CARD)
    args = parser.parse_args(argv)
    if args.small:
        for name, value in SMALL.items():
            setattr(args, name, value)
    return args


def word_clip_tokenizer(words: list[str], folder: Path, model_max_length: int = 16) -> CLIPTokenizer:
    """A CLIP BPE tokenizer whose merges spell each of ``words`` as one token (letters for anything else)."""
    vocabulary: dict[str, int] = {}
    merges: list[tuple[str, str]] = []
    letters = [chr(code) for code in range(ord("a"), ord("z") + 1)]
    for token in [*letters, *(f"{letter}</w>" for letter in letters)]:
        vocabulary.setdefault(token, len(vocabulary))
    for word in words:
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:  # merge left to right: every prefix of the word becomes a token
            if (parts[0], parts[1]) not in merges:
                merges.append((parts[0], parts[1]))
            parts = [parts[0] + parts[1], *parts[2:]]
            vocabulary.setdefault(parts[0], len(vocabulary))
    for token in ("<|startoftext|>", "<|endoftext|>"):
        vocabulary.setdefault(token, len(vocabulary))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocabulary))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=model_max_length)


def shape_words() -> list[str]:
    """Every word of the shapes world's instructions and their rule-based negatives."""
    cell_words = {word for cell in CELLS for word in cell.split()}
    return sorted({*INSTRUCTION_WORDS, *SHAPE_COLOURS, *SHAPE_KINDS, *cell_words})


def tiny_pipeline(tokenizer: CLIPTokenizer, resolution: int, seed: int) -> StableDiffusionInstructPix2PixPipeline:
    """Random-init VAE (downsampling by 2), CLIP text encoder, 8-channel UNet and DDPM scheduler, seeded."""
    torch.manual_seed(seed)
    text_dim = 32
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=text_dim,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(16, 16),
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=resolution,
    )
    make_posterior_deterministic(vae)
    unet = UNet2DConditionModel(
        sample_size=resolution // 2,
        in_channels=8,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=text_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    return StableDiffusionInstructPix2PixPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDPMScheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


@torch.no_grad()
def make_posterior_deterministic(vae: AutoencoderKL) -> None:
    """Give a random VAE a near-zero posterior std (log-variance -30 everywhere), like a trained VAE's encoder.

    A random ``quant_conv`` outputs log-variances near 0, so ``latent_dist.sample()`` (the target latent) would add
    noise of std 1 to latents of std ~0.2: the edit would be buried in noise no model can predict.
    """
    latent_channels = vae.config.latent_channels
    vae.quant_conv.weight[latent_channels:] = 0.0
    vae.quant_conv.bias[latent_channels:] = -30.0


@torch.no_grad()
def calibrate_latent_scale(vae: AutoencoderKL, images) -> float:
    """Set ``vae.config.scaling_factor`` to 1 / std of the latents of ``images`` (PIL RGB); return it."""
    pixels = torch.stack([torch.from_numpy(np.array(image)).permute(2, 0, 1) for image in images]).float() / 127.5 - 1
    scale = 1.0 / vae.encode(pixels).latent_dist.mode().std().item()
    vae.register_to_config(scaling_factor=scale)
    return scale


@torch.no_grad()
def instruction_gap(trainer: TripletEditTrainer, rows: list[dict], timesteps: list[int], seed: int) -> dict:
    """``d_pos``, ``d_neg``, ``gap`` and ``d_neg > d_pos`` over held-out rows x wrong instructions x ``timesteps``.

    Fixed noise and VAE samples (``seed``), no conditioning dropout, the UNet in eval mode.
    """
    unet = trainer.accelerator.unwrap_model(trainer.model)
    unet.eval()
    torch.manual_seed(seed)
    d_pos, d_neg = [], []
    for negative in range(len(rows[0]["negative_prompts"])):
        inputs = trainer.data_collator(
            [{**row, "negative_prompts": [row["negative_prompts"][negative]]} for row in rows]
        )
        latents, image_latents, text_positive, text_negative = trainer._encode(inputs)
        for t in timesteps:
            noise = torch.randn_like(latents)
            steps = torch.full((len(rows),), t, dtype=torch.long)
            noisy = trainer.noise_scheduler.add_noise(latents, noise, steps)
            predictions = trainer.predict_noise(
                unet, torch.cat([noisy, image_latents], dim=1), steps, text_positive, text_negative
            )
            d_pos.append(per_sample_distance(predictions["positive"], noise))
            d_neg.append(per_sample_distance(predictions["negative"], noise))
    unet.train()
    positive, negative = torch.cat(d_pos), torch.cat(d_neg)
    return {
        "d_pos": positive.mean().item(),
        "d_neg": negative.mean().item(),
        "gap": (negative - positive).mean().item(),
        "d_neg > d_pos": (negative > positive).float().mean().item(),
    }


class GapTracker(TrainerCallback):
    """Score the held-out rows before training and every ``every`` optimizer steps into ``history[step]``."""

    def __init__(self, trainer: TripletEditTrainer, rows: list[dict], timesteps: list[int], every: int) -> None:
        self.trainer, self.rows, self.timesteps, self.every = trainer, rows, timesteps, every
        self.history: dict[int, dict] = {}

    def score(self, step: int) -> None:
        self.history[step] = instruction_gap(self.trainer, self.rows, self.timesteps, seed=step + 1)

    def on_train_begin(self, args, state, control, **kwargs):
        self.score(0)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self.score(state.global_step)


def train_and_track(args: argparse.Namespace, method: str, seed: int, data: dict, scratch: Path) -> dict[int, dict]:
    """Train one method from the seed's initial pipeline; return the held-out metrics by step."""
    tokenizer = word_clip_tokenizer(shape_words(), scratch / "tokenizer")
    pipeline = tiny_pipeline(tokenizer, args.resolution, seed)
    calibrate_latent_scale(pipeline.vae, data["train"].select(range(min(256, len(data["train"]))))["edited_image"])
    config = TripletEditConfig(
        output_dir=str(scratch / "run"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        resolution=args.resolution,
        triplet_loss_weight=args.weight if method == METHODS[1] else 0.0,
        triplet_loss_margin=args.margin,
        triplet_loss_start_step=args.start_step,
        use_ema=False,
        save_strategy="no",
        logging_steps=args.eval_every,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=seed,
        data_seed=seed,
    )
    trainer = TripletEditTrainer(pipeline, config, train_dataset=data["train"])
    tracker = GapTracker(trainer, data["test"], args.timesteps, args.eval_every)
    trainer.add_callback(tracker)
    trainer.train()
    return tracker.history


def run(args: argparse.Namespace) -> dict[str, dict[int, dict]]:
    """``{method: {step: {metric: mean over seeds}}}``, plus the per-seed final gaps under ``"per seed"``."""
    histories: dict[str, list[dict[int, dict]]] = {method: [] for method in METHODS}
    with tempfile.TemporaryDirectory() as scratch:
        for seed in args.seeds:
            data = {
                "train": shape_edit_dataset(args.train_rows, args.resolution, seed=seed),
                "test": list(shape_edit_dataset(args.test_rows, args.resolution, seed=10_000 + seed)),
            }
            for method in METHODS:
                histories[method].append(train_and_track(args, method, seed, data, Path(scratch) / f"{seed}"))
                print(method, seed, json.dumps(histories[method][-1][args.steps]), flush=True)
    return {
        method: {
            step: {name: statistics.mean(run[step][name] for run in runs) for name in METRICS} for step in runs[0]
        }
        for method, runs in histories.items()
    }


def report(args: argparse.Namespace, results: dict, seconds: float, command: str) -> str:
    """The markdown report: setting, command, the metric over training for both methods."""
    rows = {
        f"{method}, step {step}": metrics for method, by_step in results.items() for step, metrics in by_step.items()
    }
    final = {method: results[method][args.steps] for method in METHODS}
    return "\n".join(
        [
            "# SuperEdit triplet term vs plain InstructPix2Pix on synthetic shape edits (tiny pipeline, from scratch)",
            "",
            f"Command (CPU, {seconds / 60:.1f} min): `{command}`",
            "",
            f"Data: `hf_contrastive.data.shapes`, {args.train_rows} training rows, {args.test_rows} held-out rows "
            f"(other seed) x 3 wrong instructions x t in {args.timesteps}, resolution {args.resolution}. Training: "
            f"{args.steps} steps, batch {args.batch_size}, AdamW lr {args.learning_rate}, conditioning dropout 0.05, "
            f"seeds {args.seeds} (numbers are means over seeds). Triplet: weight {args.weight}, margin {args.margin}, "
            f"from step {args.start_step}. See the recipe's docstring for the model.",
            "",
            "Held-out metrics over training (d = per-sample mean squared error of the predicted noise; gap = "
            "mean(d_neg - d_pos); last column: share of cases where the wrong instruction predicts worse):",
            "",
            metrics_table(rows, list(METRICS), row_header="method, step"),
            "",
            metrics_table(final, list(METRICS), row_header=f"after {args.steps} steps"),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    started = time.perf_counter()
    results = run(args)
    command = "OMP_NUM_THREADS=1 python recipes/superedit_shapes.py " + " ".join(argv)
    text = report(args, results, time.perf_counter() - started, command.strip())
    print(text)
    write_run_report(Path(args.output_dir), results, text, None if args.small else Path(args.card))
    return results


if __name__ == "__main__":
    main()
