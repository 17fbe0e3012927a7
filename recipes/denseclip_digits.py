"""DenseCLIP on MNIST digit canvases: pixel-text score maps and context-aware prompting against CLIP + the same head.

Run from the repository root (CPU; about 20 minutes on 2 cores with the defaults)::

    python recipes/denseclip_digits.py --clip-path outputs/clip_digits     # a CLIP from recipes/clip_digits.py
    python recipes/denseclip_digits.py                                     # a randomly initialised small CLIP
    python recipes/denseclip_digits.py --small --output-dir /tmp/dc-smoke  # smoke run (< 30 s), no card

What it does:

1. Builds segmentation canvases (:func:`hf_contrastive.data.segmentation.digit_canvases`): 1-3 MNIST digits pasted
   on a ``canvas_size`` x ``canvas_size`` black canvas, K = 11 classes (background + ten digits), anti-aliased
   stroke edges ignored (255). Training canvases use MNIST test rows ``0..train_digits-1``, evaluation canvases the
   remaining rows, so no digit instance is shared.
2. Starts every variant from the same CLIP (``--clip-path``: a ``CLIPModel`` + tokenizer folder; else
   :func:`hf_contrastive.models.clip.small_clip` with a tokenizer trained on the digit captions) and the same seed:
   - ``CLIP + head (baseline)``: the CLIP image encoder's patch states and the same conv head, no text
     (the paper's "CLIP + FPN" row);
   - ``+ score map (no context decoder)``: learnable context, score maps concatenated to the features, the
     auxiliary pixel-text loss; no vision-to-language decoder;
   - ``DenseCLIP``: the above plus the context decoder (post-model prompting, gamma = 1e-4).
3. Trains each with :class:`hf_contrastive.trainers.dense.DenseCLIPTrainer` (AdamW, image encoder at 0.1x the
   learning rate, text encoder frozen, poly schedule) for the same steps and batch, then reports mIoU, pixel
   accuracy and mean class accuracy on the evaluation canvases (:mod:`hf_contrastive.evaluation.segmentation`),
   mean +- std over ``--seeds``.

Writes ``results.json`` and ``report.md`` to ``--output-dir`` and the report to ``--card`` (unless ``--small``).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import CLIPModel, CLIPProcessor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout this recipe belongs to

from hf_contrastive.data.images import CAPTION_TEMPLATES, digit_caption, load_mnist  # noqa: E402
from hf_contrastive.data.segmentation import DIGIT_CLASS_NAMES, SegmentationCollator, digit_canvases  # noqa: E402
from hf_contrastive.evaluation.segmentation import SegmentationEvaluator  # noqa: E402
from hf_contrastive.hub.card import metrics_table, write_run_report  # noqa: E402
from hf_contrastive.models.clip import small_clip  # noqa: E402
from hf_contrastive.models.denseclip import DenseCLIPSegmenter  # noqa: E402
from hf_contrastive.models.tokenizer import train_wordpiece_tokenizer  # noqa: E402
from hf_contrastive.trainers.dense import DenseCLIPTrainer, DenseCLIPTrainingConfig  # noqa: E402

MNIST = "../shared/data/mnist-test"
CARD = "model_cards/denseclip-digits.md"
SMALL = {"train_canvases": 16, "eval_canvases": 8, "train_digits": 200, "steps": 2, "batch_size": 4, "seeds": [0]}
VARIANTS = {
    "CLIP + head (baseline)": {"text_guidance": False},
    "+ score map (no context decoder)": {"context_decoder_layers": 0},
    "DenseCLIP": {},
}
COLUMNS = ("mIoU", "pixel accuracy", "mean accuracy")
METRIC_KEYS = {"mIoU": "mean_iou", "pixel accuracy": "pixel_accuracy", "mean accuracy": "mean_accuracy"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip-path", default=None, help="A CLIPModel + tokenizer folder (else a random small CLIP).")
    parser.add_argument("--mnist", default=MNIST)
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/denseclip-digits"))
    parser.add_argument("--card", type=Path, default=Path(CARD))
    parser.add_argument("--canvas-size", type=int, default=56, help="Canvas side; a multiple of the patch size.")
    parser.add_argument("--train-canvases", type=int, default=3000)
    parser.add_argument("--eval-canvases", type=int, default=500)
    parser.add_argument("--train-digits", type=int, default=8000, help="MNIST rows for training canvases.")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Head / decoder lr (paper: 1e-4).")
    parser.add_argument("--warmup-steps", type=int, default=25)
    parser.add_argument("--decoder-layers", type=int, default=3)
    parser.add_argument("--decoder-width", type=int, default=64, help="Context decoder width (paper: 256).")
    parser.add_argument("--head-channels", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--small", action="store_true", help="Smoke run: a few canvases and steps, no card.")
    args = parser.parse_args(argv)
    if args.small:
        vars(args).update(SMALL)
    return args


# ----------------------------------------------------------------------------------------------- data and CLIP
def load_canvases(args) -> tuple:
    """Training and evaluation canvases from disjoint MNIST rows (seeded)."""
    digits = load_mnist(args.mnist, limit=None if not args.small else 2 * args.train_digits)
    train_digits = digits.select(range(args.train_digits))
    eval_digits = digits.select(range(args.train_digits, len(digits)))
    train = digit_canvases(train_digits, args.train_canvases, args.canvas_size, seed=0)
    return train, digit_canvases(eval_digits, args.eval_canvases, args.canvas_size, seed=1)


def load_clip(args) -> tuple[CLIPModel, object, tuple[float, ...], tuple[float, ...], str]:
    """The starting CLIP, its tokenizer and its pixel mean / std: ``--clip-path``, or a seeded random small CLIP."""
    if args.clip_path:
        processor = CLIPProcessor.from_pretrained(args.clip_path)
        image_processor = processor.image_processor
        clip = CLIPModel.from_pretrained(args.clip_path)
        return clip, processor.tokenizer, image_processor.image_mean, image_processor.image_std, args.clip_path
    captions = [digit_caption(label, template) for label in range(10) for template in CAPTION_TEMPLATES]
    tokenizer = train_wordpiece_tokenizer(captions + list(DIGIT_CLASS_NAMES), vocab_size=400, model_max_length=32)
    clip = small_clip(tokenizer, seed=0)
    return clip, tokenizer, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "random small CLIP (no image-text pretraining)"


# ----------------------------------------------------------------------------------------------- training
def train_variant(args, start: dict, train, evaluator, variant: dict, seed: int) -> dict[str, float]:
    """Train one variant from the starting CLIP (``start``: clip, tokenizer, normalisation) with ``seed``."""
    torch.manual_seed(seed)
    options = {
        "image_mean": start["image_mean"],
        "image_std": start["image_std"],
        "context_decoder_layers": args.decoder_layers,
        "context_decoder_width": args.decoder_width,
        "head_channels": args.head_channels,
        **variant,
    }
    model = DenseCLIPSegmenter.from_clip(start["clip"], start["tokenizer"], DIGIT_CLASS_NAMES, **options)
    config = DenseCLIPTrainingConfig(
        output_dir=str(args.output_dir / "runs"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        logging_steps=max(1, args.steps // 10),
        save_strategy="no",
        report_to=[],
        seed=seed,
        dataloader_drop_last=True,
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=True,
    )
    trainer = DenseCLIPTrainer(model, config, train_dataset=train, evaluator=evaluator)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    metrics = trainer.run_evaluator("eval")
    losses = [entry for entry in trainer.state.log_history if "loss_seg" in entry][-1]
    return {
        **{column: metrics[f"eval_digits_{key}"] for column, key in METRIC_KEYS.items()},
        "final loss_seg": losses["loss_seg"],
        "train seconds": seconds,
    }


def summarise(runs: list[dict[str, float]]) -> dict[str, float]:
    """Mean over seeds of every metric, plus the std of mIoU (0 with one seed)."""
    summary = {key: statistics.fmean(run[key] for run in runs) for key in runs[0]}
    summary["mIoU std"] = statistics.pstdev(run["mIoU"] for run in runs)
    return summary


def run(args) -> dict:
    train, evaluation = load_canvases(args)
    clip, tokenizer, image_mean, image_std, clip_name = load_clip(args)
    start = {"clip": clip, "tokenizer": tokenizer, "image_mean": image_mean, "image_std": image_std}
    collator = SegmentationCollator(len(DIGIT_CLASS_NAMES), image_mean, image_std)
    evaluator = SegmentationEvaluator(
        evaluation, collator, batch_size=64, name="digits", class_names=DIGIT_CLASS_NAMES
    )
    results: dict = {"settings": {key: str(value) for key, value in vars(args).items()}, "clip": clip_name}
    results["per_seed"] = {
        name: [train_variant(args, start, train, evaluator, variant, seed) for seed in args.seeds]
        for name, variant in VARIANTS.items()
    }
    results["summary"] = {name: summarise(runs) for name, runs in results["per_seed"].items()}
    return results


def report(results: dict, command: str) -> str:
    settings = results["settings"]
    baseline = results["summary"][next(iter(VARIANTS))]["mIoU"]
    rows = {
        name: {**summary, "mIoU - baseline": summary["mIoU"] - baseline}
        for name, summary in results["summary"].items()
    }
    table = metrics_table(rows, (*COLUMNS, "mIoU std", "mIoU - baseline", "train seconds"), row_header="model")
    return f"""# DenseCLIP on MNIST digit canvases: mIoU against CLIP + the same head

Command: `{command}`

- Data: {settings["train_canvases"]} training canvases of {settings["canvas_size"]}x{settings["canvas_size"]} pixels
  with 1-3 MNIST digits each (digits from MNIST test rows 0..{int(settings["train_digits"]) - 1}), and
  {settings["eval_canvases"]} evaluation canvases built from the other rows.
- Classes: K = 11, background + ten digits, prompted by their names ("background", "zero", ..., "nine");
  anti-aliased stroke edges are ignored (label 255) in training and evaluation.
- Starting CLIP: {results["clip"]}. Every variant starts from it and trains {settings["steps"]} steps of batch
  {settings["batch_size"]}: AdamW, lr {settings["learning_rate"]} for the head, decoder and context, 0.1x for the
  image encoder, text encoder frozen, poly schedule.
- Seeds {settings["seeds"]}: the table shows the mean over seeds and the std of mIoU. A difference smaller than about
  twice that std is within seed noise.

{table}

- baseline: the CLIP image encoder's patch states into the conv head (the paper's "CLIP + FPN" row).
- + score map: learnable context (8 vectors), pixel-text score maps concatenated to the features, auxiliary
  pixel-text loss (weight 0.4, tau 0.07); no context decoder.
- DenseCLIP: the above plus the vision-to-language context decoder ({settings["decoder_layers"]} layers, width
  {settings["decoder_width"]}), gamma initialised at 1e-4.
"""


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    results = run(args)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    command = "python recipes/denseclip_digits.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    text = report(results, command.strip())
    write_run_report(args.output_dir, results, text, None if args.small else args.card)
    print(text)
    return results


if __name__ == "__main__":
    main()
