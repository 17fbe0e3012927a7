"""CLIP-rocket ablation on MNIST: basic CLIP vs + augmentations vs CLIP-rocket vs CLIP-rocket + BarLIP/SiamLIP/SwALIP.

Run from the repository root::

    python recipes/clip_rocket_digits.py                                          # full run, writes the card
    accelerate launch recipes/clip_rocket_digits.py --variants clip clip_rocket   # several processes
    python recipes/clip_rocket_digits.py --small --output-dir /tmp/rocket-smoke   # smoke run (< 30 s)

The paper's ablation ("Improved Baselines for Vision-Language Pre-training", arXiv 2305.08675), scaled to digits:
every variant trains a small CLIP from scratch (:func:`hf_contrastive.models.clip.small_clip`, 28x28 images) on the
MNIST test split's rows ``0..7999`` with template captions, with the same budget and seeds, and is scored by
zero-shot top-1 accuracy on rows ``8000..9999`` (class embedding = mean of the normalised prompt embeddings):

* ``clip``: symmetric InfoNCE on (image, caption) (:class:`hf_contrastive.objectives.clip.CLIPLoss`).
* ``clip_aug``: + 2 strong image views and 2 EDA caption views contrasted through CLIP's own projections and
  temperature, no label smoothing (:class:`CL2LLoss` with ``separate_temperature=False`` on a
  :class:`CLIPRocketModel` with ``separate_local_projector=False``).
* ``clip_rocket``: + separate MLP projectors and temperature, label smoothing 0.1, text local-mode dropout.
* ``clip_rocket_simclr`` / ``_barlip`` / ``_siamlip`` / ``_swalip``: CLIP-rocket plus the SSL add-on
  (:func:`hf_contrastive.objectives.composite.clip_rocket_with`).

The augmented variants also train the global branch on weak views (random resized crop with scale 0.5-1, caption
stopword removal), as the paper does; evaluation always embeds the raw images. Deviations, from the digit setting:
no horizontal flip (mirrored digits are other glyphs); synonyms from the small table below (no WordNet offline).

Writes ``results.json`` and ``report.md`` to ``--output-dir`` and the report to ``--card`` (unless ``--small``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from datasets import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout this recipe belongs to

from hf_contrastive.data.augment import clip_rocket_views  # noqa: E402
from hf_contrastive.data.images import CAPTION_TEMPLATES, DIGIT_WORDS, add_captions, class_prompts, load_mnist  # noqa: E402
from hf_contrastive.evaluation.zero_shot import ZeroShotClassificationEvaluator  # noqa: E402
from hf_contrastive.hub.card import metrics_table, write_run_report  # noqa: E402
from hf_contrastive.models.clip import clip_processor, small_clip  # noqa: E402
from hf_contrastive.models.clip_rocket import CLIPRocketModel  # noqa: E402
from hf_contrastive.models.tokenizer import train_wordpiece_tokenizer  # noqa: E402
from hf_contrastive.objectives.clip import CLIPLoss  # noqa: E402
from hf_contrastive.objectives.clip_rocket import CL2LLoss  # noqa: E402
from hf_contrastive.objectives.composite import clip_rocket_with  # noqa: E402
from hf_contrastive.trainers.multimodal import MultiModalConfig, MultiModalTrainer  # noqa: E402

MNIST = "../shared/data/mnist-test"
CARD = "model_cards/clip-rocket-digits.md"
VARIANTS = (
    "clip",
    "clip_aug",
    "clip_rocket",
    "clip_rocket_simclr",
    "clip_rocket_barlip",
    "clip_rocket_siamlip",
    "clip_rocket_swalip",
)
IMAGE_SIZE = 28

# Synonyms for the words of the digit captions (EDA's synonym replacement; WordNet is not available offline).
# Digit names have none: replacing "seven" would change the caption's meaning.
DIGIT_CAPTION_SYNONYMS = {
    "photo": ["picture", "image"],
    "picture": ["photo", "image"],
    "image": ["picture", "photo"],
    "handwritten": ["written", "drawn"],
    "written": ["drawn", "penned"],
    "digit": ["numeral", "number"],
    "number": ["numeral", "digit"],
    "numeral": ["number", "digit"],
    "small": ["little", "tiny"],
    "scanned": ["digitised", "copied"],
    "black": ["dark"],
    "white": ["light"],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(MNIST))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--train-rows", type=int, default=8000)
    parser.add_argument("--eval-start", type=int, default=8000)
    parser.add_argument("--eval-rows", type=int, default=2000)
    parser.add_argument("--epochs", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--num-augs", type=int, default=2)
    parser.add_argument("--text-dropout", type=float, default=0.1)
    parser.add_argument("--stopword-prob", type=float, default=0.5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--local-crop-min", type=float, default=0.08, help="Smallest crop area of the strong views (paper: 0.08)."
    )
    parser.add_argument(
        "--global-crop-min", type=float, default=0.5, help="Smallest crop area of the weak global view (paper: 0.5)."
    )
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/clip-rocket-digits"))
    parser.add_argument("--card", type=Path, default=Path(CARD))
    parser.add_argument("--small", action="store_true", help="Smoke run: a few rows and steps, no card.")
    args = parser.parse_args(argv)
    if args.small:
        args.train_rows, args.eval_start, args.eval_rows, args.epochs, args.batch_size = 64, 64, 40, 1, 16
    return args


def build_tokenizer():
    """WordPiece over every caption, prompt and synonym (offline), ending each text with [SEP]."""
    words = [w for synonyms in DIGIT_CAPTION_SYNONYMS.values() for w in synonyms]
    texts = [t.format(word=w, digit=d) for t in CAPTION_TEMPLATES for d, w in enumerate(DIGIT_WORDS)]
    return train_wordpiece_tokenizer(texts + words + list(DIGIT_WORDS), vocab_size=400, model_max_length=32)


def build_model_and_objective(variant: str, tokenizer, args: argparse.Namespace, seed: int):
    """The variant's model (a CLIPModel, or a CLIPRocketModel around one) and objective."""
    clip = small_clip(tokenizer, seed=seed, image_size=IMAGE_SIZE, max_text_length=32)
    if variant == "clip":
        return clip, CLIPLoss()
    if variant == "clip_aug":
        model = CLIPRocketModel.from_clip(clip, separate_local_projector=False)
        return model, CL2LLoss(args.num_augs, label_smoothing=0.0, separate_temperature=False)
    addon = variant.removeprefix("clip_rocket").removeprefix("_") or None
    heads = {"barlip": {"barlow_dim": 256}, "siamlip": {"siam_dim": 64}}.get(addon, {})
    model = CLIPRocketModel.from_clip(clip, text_dropout=args.text_dropout, **heads)
    return model, clip_rocket_with(addon, num_augs=args.num_augs)


def run_variant(variant: str, seed: int, train: Dataset, evaluator, tokenizer, args) -> dict[str, float]:
    torch.manual_seed(seed)
    model, objective = build_model_and_objective(variant, tokenizer, args, seed)
    views = None
    if variant != "clip":
        synonyms = DIGIT_CAPTION_SYNONYMS
        views = clip_rocket_views(
            IMAGE_SIZE,
            args.num_augs,
            flip=False,
            stopword_prob=args.stopword_prob,
            synonyms=synonyms,
            local_scale=(args.local_crop_min, 1.0),
            global_scale=(args.global_crop_min, 1.0),
        )
    config = MultiModalConfig(
        output_dir=str(args.output_dir / f"{variant}-seed{seed}"),
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        adam_beta2=0.98,
        warmup_steps=0.05,
        lr_scheduler_type="cosine",
        seed=seed,
        logging_steps=20,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
    )
    trainer = MultiModalTrainer(
        model=model,
        args=config,
        train_dataset=train,
        processing_class=clip_processor(tokenizer, IMAGE_SIZE),
        objective=objective,
        views=views,
    )
    trainer.train()
    return {key.removeprefix("zero_shot_"): value for key, value in evaluator(trainer.embed_values).items()}


def report(results: dict[str, dict[str, float]], args: argparse.Namespace, command: str) -> str:
    table = metrics_table(results, ["top1_accuracy", "top5_accuracy"], row_header="variant (mean over seeds)")
    return (
        "# CLIP-rocket ablation on MNIST digits\n\n"
        f"Zero-shot accuracy on MNIST rows {args.eval_start}..{args.eval_start + args.eval_rows - 1} of small CLIPs "
        f"trained from scratch on rows 0..{args.train_rows - 1} with template captions; {args.epochs} epochs, batch "
        f"{args.batch_size}, seeds {args.seeds}, A = {args.num_augs} views; crop area ranges: strong views "
        f"({args.local_crop_min}, 1), weak global view ({args.global_crop_min}, 1) (paper: 0.08 and 0.5).\n\n"
        f"{table}\n\nCommand: `{command}`\n"
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    rows = load_mnist(args.data, limit=args.eval_start + args.eval_rows)
    train = add_captions(rows.select(range(args.train_rows)), column="text").remove_columns("label")
    test = rows.select(range(args.eval_start, args.eval_start + args.eval_rows))
    evaluator = ZeroShotClassificationEvaluator(test["image"], test["label"], class_prompts(range(10)), top_k=(1, 5))
    tokenizer = build_tokenizer()
    per_seed = {v: [run_variant(v, s, train, evaluator, tokenizer, args) for s in args.seeds] for v in args.variants}
    results = {v: {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]} for v, runs in per_seed.items()}
    command = "python recipes/clip_rocket_digits.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(results, args, command.strip())
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_run_report(args.output_dir, {"mean": results, "per_seed": per_seed}, text, None if args.small else args.card)
    print(text)
    return results


if __name__ == "__main__":
    main()
