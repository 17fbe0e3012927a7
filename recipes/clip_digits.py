"""Train a small CLIP from scratch on MNIST digits with template captions; zero-shot accuracy before and after.

    python recipes/clip_digits.py                                        # one CPU core: a few minutes
    accelerate launch --num_processes 2 recipes/clip_digits.py           # the same global batch over 2 processes
    python recipes/clip_digits.py --max-steps 3 --train-rows 64 --eval-rows 50   # smoke run (seconds)

No captioned images exist offline, so every training image of the MNIST test split (rows 0..7999) gets a caption
drawn from ``CAPTION_TEMPLATES`` ("a handwritten seven"). Rows 8000..9999 are held out and scored with

- zero-shot classification: class embedding = mean of the normalised ``CLASS_PROMPT_TEMPLATES`` prompts (top-1 and
  top-5 accuracy; chance is 10% / 50%);
- image-text retrieval against their own template captions (Recall@1/5/10). Many held-out captions are identical
  ("a handwritten seven"), so only one of the equally good texts counts as the hit: read it as a relative measure.

The model (a ``CLIPModel`` with the trained ``logit_scale``) and its processor are saved to ``--output-dir``, so
``CLIPModel.from_pretrained`` / ``CLIPProcessor.from_pretrained`` reload them; ``results.json`` and ``README.md``
(the model card) hold the numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from hf_contrastive.data.images import (
    CAPTION_TEMPLATES,
    CLASS_PROMPT_TEMPLATES,
    DIGIT_WORDS,
    add_captions,
    class_prompts,
    digit_caption,
    load_mnist,
)
from hf_contrastive.evaluation.zero_shot import ImageTextRetrievalEvaluator, ZeroShotClassificationEvaluator
from hf_contrastive.hub import CardEvalResult
from hf_contrastive.hub.card import metrics_table
from hf_contrastive.models.clip import clip_processor, small_clip
from hf_contrastive.models.tokenizer import train_wordpiece_tokenizer
from hf_contrastive.objectives.clip import CLIPLoss
from hf_contrastive.trainers.multimodal import MultiModalConfig, MultiModalTrainer

REPO = Path(__file__).resolve().parents[1]
TRAIN_ROWS, EVAL_START = 8000, 8000
logger = logging.getLogger("clip_digits")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--output-dir", type=Path, default=REPO / "outputs" / "clip_digits")
    parser.add_argument("--train-rows", type=int, default=TRAIN_ROWS, help="first MNIST test rows to train on")
    parser.add_argument("--eval-rows", type=int, default=2000, help="held-out rows from 8000 on")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (smoke runs)")
    parser.add_argument("--batch-size", type=int, default=128, help="per-device batch (in-batch negatives)")
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--gradient-cache", action="store_true", help="GradCache over images and captions")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def caption_tokenizer():
    """A WordPiece tokenizer over every caption and prompt the recipe writes (ends each text with [SEP])."""
    texts = [digit_caption(label, t) for label in range(10) for t in CAPTION_TEMPLATES + CLASS_PROMPT_TEMPLATES]
    return train_wordpiece_tokenizer(texts + list(DIGIT_WORDS), vocab_size=300, model_max_length=32)


def evaluate(trainer: MultiModalTrainer, held_out) -> dict[str, float]:
    """Zero-shot top-1/top-5 accuracy and retrieval recall of the model as it is now."""
    images, labels = held_out["image"], held_out["label"]
    metrics = ZeroShotClassificationEvaluator(images, labels, class_prompts(range(10)))(trainer.embed_values)
    metrics.update(ImageTextRetrievalEvaluator(images, held_out["text"])(trainer.embed_values))
    return {key: round(value, 4) for key, value in metrics.items()}


def card_results(before: dict[str, float], after: dict[str, float]) -> list[CardEvalResult]:
    return [
        CardEvalResult(
            dataset_name="MNIST test rows 8000-9999 (local)",
            dataset_type="mnist",
            metric_type=key,
            value=value,
            before=before[key],
            task_type="zero-shot-image-classification" if key.startswith("zero_shot") else "image-text-retrieval",
            task_name="Zero-shot classification" if key.startswith("zero_shot") else "Image-text retrieval",
        )
        for key, value in after.items()
    ]


def main(argv=None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)
    mnist = load_mnist(args.data_dir / "mnist-test")
    train = add_captions(mnist.select(range(min(args.train_rows, TRAIN_ROWS))), seed=args.seed, column="text")
    held_out = add_captions(mnist.select(range(EVAL_START, EVAL_START + args.eval_rows)), seed=1, column="text")

    tokenizer = caption_tokenizer()
    processor = clip_processor(tokenizer, image_size=28)
    config = MultiModalConfig(
        output_dir=str(args.output_dir),
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=256,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        adam_beta2=0.98,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        gradient_cache=args.gradient_cache,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        disable_tqdm=True,
    )
    trainer = MultiModalTrainer(
        small_clip(tokenizer, seed=args.seed), config, train, processing_class=processor, objective=CLIPLoss()
    )
    results = {"before": evaluate(trainer, held_out)}
    trainer.train()
    results["after"] = evaluate(trainer, held_out)

    trainer.save_model(str(args.output_dir))
    processor.save_pretrained(str(args.output_dir))
    trainer.create_model_card(
        model_name="clip-digits",
        dataset_name="MNIST test rows 0-7999, template captions (local)",
        eval_results=card_results(results["before"], results["after"]),
    )
    if trainer.is_world_process_zero():
        table = metrics_table(results, list(results["after"]), row_header="model")
        (args.output_dir / "results.json").write_text(
            json.dumps({"args": vars(args), "results": results}, default=str)
        )
        print(table)
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
