"""MoCoOp base-to-new on MNIST: prompts learned on digits 0-4 (16 shots each), evaluated on 0-4 and on unseen 5-9.

Run from the repository root (CPU, a few minutes)::

    python recipes/mocoop_digits.py --clip-path outputs/clip_digits                     # card: model_cards/mocoop-digits.md
    python recipes/mocoop_digits.py --clip-path outputs/clip_digits --small --output-dir /tmp/mocoop   # smoke run

``--clip-path``: a ``CLIPModel`` + ``CLIPProcessor`` folder trained on all ten digits (``recipes/clip_digits.py``, or
the stand-in CLIP that ``recipes/close_digits.py`` saves to ``<output-dir>/clip``). It stays frozen.

What it does:

1. Few-shot training rows: ``--shots`` images of each base digit from MNIST test rows ``0..7999``; evaluation: rows
   ``8000..9999``, base images among the base names, novel images among the novel names (CoOp's protocol).
2. Zero-shot CLIP: class embedding = normalised mean of the templates' features (prompt ensembling).
3. CoOp-style: one expert (the first template), no gate or text loss; otherwise as MoCoOp (bias ``w``, vision
   LayerNorms at 0.1x lr), so the difference is the mixture and its two auxiliary losses.
4. MoCoOp without the auxiliary losses (mixture only), and MoCoOp (text loss weight 5, gate loss weight 1).
   As in the paper's base-to-new runs, the text-to-text loss sees the *novel class names* (not images).

Training follows the released configs: SGD, lr 0.032 at batch 32, cosine schedule, gradient clipping 1.0, weight
decay 5e-4. Templates are written without a trailing period: the digit CLIP's tokenizer never saw one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import CLIPModel, CLIPProcessor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout this recipe belongs to

from hf_contrastive.data.images import DIGIT_WORDS, load_mnist  # noqa: E402
from hf_contrastive.evaluation.base_to_new import BaseToNewEvaluator, ClassSplit, ZeroShotClassifier  # noqa: E402
from hf_contrastive.hub.card import metrics_table, write_run_report  # noqa: E402
from hf_contrastive.models.clip import image_embeddings  # noqa: E402
from hf_contrastive.models.mocoop import MoCoOpModel, hard_prompt_features  # noqa: E402
from hf_contrastive.trainers.prompt_learning import PromptLearningConfig, PromptLearningTrainer  # noqa: E402

MNIST = "../shared/data/mnist-test"
CARD = "model_cards/mocoop-digits.md"
BASE_DIGITS, NOVEL_DIGITS = list(range(5)), list(range(5, 10))
# Semantic groups (one expert each), first template of a group = the expert's initial context.
TEMPLATE_GROUPS = [
    ["a photo of the digit {}"],
    ["a handwritten {}", "the number {} written by hand"],
    ["a black and white image of a {}", "a small picture of the numeral {}"],
]
SETTINGS = {
    "CoOp-style (1 prompt)": {"groups": "first", "text_loss_weight": 0.0, "gate_loss_weight": 0.0},
    "mixture, no aux. losses": {"groups": "all", "text_loss_weight": 0.0, "gate_loss_weight": 0.0},
    "MoCoOp": {"groups": "all", "text_loss_weight": 5.0, "gate_loss_weight": 1.0},
}
COLUMNS = ("base_accuracy", "novel_accuracy", "harmonic_mean")
SMALL = {"shots": 2, "eval_rows": 40, "epochs": 1, "batch_size": 5, "seeds": [1]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip-path", required=True, help="A CLIPModel + CLIPProcessor folder (trained on digits).")
    parser.add_argument("--mnist", default=MNIST)
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/mocoop-digits"))
    parser.add_argument("--card", type=Path, default=Path(CARD))
    parser.add_argument("--shots", type=int, default=16, help="Training images per base class.")
    parser.add_argument("--train-rows", type=int, default=8000, help="Shots are drawn from rows 0..train_rows-1.")
    parser.add_argument("--eval-rows", type=int, default=2000, help="Evaluation rows after the training rows.")
    parser.add_argument("--epochs", type=float, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=0.032)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="Shot draws / runs (averaged).")
    parser.add_argument("--small", action="store_true", help="Smoke run: a few shots and rows, no card.")
    args = parser.parse_args(argv)
    if args.small:
        vars(args).update(SMALL)
    return args


def few_shot_rows(rows: Dataset, digits: list[int], shots: int, seed: int) -> Dataset:
    """``shots`` rows of each digit in ``digits`` (seeded), labels re-indexed to positions in ``digits``."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.tensor(rows["label"])
    picked = []
    for digit in digits:
        candidates = (labels == digit).nonzero().flatten()
        picked += candidates[torch.randperm(len(candidates), generator=generator)[:shots]].tolist()
    subset = rows.select(picked)
    return subset.map(lambda row: {"label": digits.index(row["label"])})


def evaluator(rows: Dataset, processor: CLIPProcessor) -> BaseToNewEvaluator:
    pixels = processor.image_processor(images=[image.convert("RGB") for image in rows["image"]], return_tensors="pt")
    pixels, labels = pixels["pixel_values"], rows["label"]
    return BaseToNewEvaluator(
        ClassSplit.from_labelled(pixels, labels, BASE_DIGITS, DIGIT_WORDS),
        ClassSplit.from_labelled(pixels, labels, NOVEL_DIGITS, DIGIT_WORDS),
    )


def zero_shot(clip: CLIPModel, tokenizer) -> ZeroShotClassifier:
    templates = [template for group in TEMPLATE_GROUPS for template in group]
    features = hard_prompt_features(clip, tokenizer, templates, list(DIGIT_WORDS))
    return ZeroShotClassifier(
        lambda pixels: image_embeddings(clip, pixels),
        F.normalize(features.mean(dim=0), dim=-1),
        DIGIT_WORDS,
        clip.logit_scale.exp().item(),
    )


def train_prompts(args, name: str, setting: dict, seed: int, clip, processor, train: Dataset) -> MoCoOpModel:
    groups = TEMPLATE_GROUPS[:1] if setting["groups"] == "first" else TEMPLATE_GROUPS
    model = MoCoOpModel.from_clip(
        clip,
        processor.tokenizer,
        classnames=[DIGIT_WORDS[digit] for digit in BASE_DIGITS],
        all_classnames=list(DIGIT_WORDS),
        templates=[template for group in groups for template in group],
        groups=[len(group) for group in groups],
        clip_name_or_path=args.clip_path,
        text_loss_weight=setting["text_loss_weight"],
        gate_loss_weight=setting["gate_loss_weight"],
    )
    folder = args.output_dir / f"{name.split(' ')[0].strip(',').lower()}-seed{seed}"
    config = PromptLearningConfig(
        output_dir=str(folder),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        optim="sgd",
        weight_decay=5e-4,
        lr_scheduler_type="cosine",
        max_grad_norm=1.0,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        seed=seed,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
    )
    trainer = PromptLearningTrainer(model, config, image_processor=processor.image_processor, train_dataset=train)
    trainer.train()
    model.save_pretrained(folder)
    return model


def classify_with(model: MoCoOpModel):
    model.eval()
    return lambda pixels, names: model(pixels.to(model.device), classnames=names).logits


def run(args) -> dict:
    rows = load_mnist(args.mnist, limit=args.train_rows + args.eval_rows)
    test = rows.select(range(args.train_rows, args.train_rows + args.eval_rows))
    clip = CLIPModel.from_pretrained(args.clip_path).eval()
    processor = CLIPProcessor.from_pretrained(args.clip_path)
    evaluate = evaluator(test, processor)
    results: dict = {"settings": {key: str(value) for key, value in vars(args).items()}, "per_seed": {}, "seconds": {}}
    results["runs"] = {"zero-shot CLIP (templates)": evaluate(zero_shot(clip, processor.tokenizer))}
    for name, setting in SETTINGS.items():
        start = time.perf_counter()
        per_seed = []
        for seed in args.seeds:
            train = few_shot_rows(rows.select(range(args.train_rows)), BASE_DIGITS, args.shots, seed)
            per_seed.append(evaluate(classify_with(train_prompts(args, name, setting, seed, clip, processor, train))))
        results["per_seed"][name] = per_seed
        results["runs"][name] = {column: sum(run[column] for run in per_seed) / len(per_seed) for column in COLUMNS}
        results["seconds"][name] = round((time.perf_counter() - start) / len(args.seeds), 1)
    return results


def report(results: dict, command: str) -> str:
    settings = results["settings"]
    templates = "; ".join(" / ".join(f'"{t}"' for t in group) for group in TEMPLATE_GROUPS)
    table = metrics_table(results["runs"], COLUMNS, row_header="method")
    return f"""# MoCoOp on MNIST digits: base-to-new (base 0-4, novel 5-9)

Command: `{command}`

Frozen CLIP: `{settings["clip_path"]}`. Prompt learners are trained on {settings["shots"]} images per base digit
(MNIST test rows 0..{int(settings["train_rows"]) - 1}) for {settings["epochs"]} epochs
(SGD, lr {settings["learning_rate"]}, batch {settings["batch_size"]}, cosine, clip 1.0), and evaluated on rows
{settings["train_rows"]}..{int(settings["train_rows"]) + int(settings["eval_rows"]) - 1}: base images among the five
base names, novel images among the five novel names; accuracy in %, HM = harmonic mean. Learned prompts: mean
over seeds {settings["seeds"]} (each seed draws its own shots); per-seed numbers are in `results.json`.

Template groups (one expert each): {templates}. Zero-shot CLIP averages all five templates.
CoOp-style = one expert from the first template, no auxiliary losses (same bias w and LayerNorm tuning as MoCoOp).
Caveat (as in the paper): the text-to-text loss of MoCoOp sees the novel class *names* during training.

{table}

Training time per seed (s): {", ".join(f"{name}: {seconds}" for name, seconds in results["seconds"].items())}.
"""


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    results = run(args)
    command = "python recipes/mocoop_digits.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(results, command)
    write_run_report(args.output_dir, results, text, None if args.small else args.card)
    print(text)
    return results


if __name__ == "__main__":
    main()
