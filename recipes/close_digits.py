"""CLOSE on MNIST: train digit classifiers and captioners on caption embeddings only, test them on image embeddings.

Run from the repository root (a few minutes on 2 CPU cores)::

    python recipes/clip_digits.py --output-dir outputs/clip_digits           # first: the frozen CLIP (a few minutes)
    python recipes/close_digits.py --clip-path outputs/clip_digits
    python recipes/close_digits.py --clip-path outputs/clip_digits --small --output-dir /tmp/close-smoke   # < 30 s

What it does:

1. Reads the MNIST test split (``../shared/data/mnist-test``): rows ``0..train_rows-1`` are the training side, rows
   ``eval_start..eval_start+eval_rows-1`` the test images. Training rows get template captions
   ("a handwritten seven", :func:`hf_contrastive.data.images.add_captions`).
2. Loads the frozen CLIP from ``--clip-path`` (a ``CLIPModel`` + ``CLIPProcessor`` folder, e.g. the one
   ``recipes/clip_digits.py`` trains on the same training rows with their captions).
3. Embeds captions and images once with the frozen CLIP (:func:`hf_contrastive.data.close.add_clip_embeddings`).
4. Classification: a linear head per setting, trained with ``transformers.Trainer`` on *caption* embeddings only and
   scored by accuracy on the test *images*: no noise (sigma = 0), the paper's sigma (0.12, single-caption), the
   sigma that perturbs this CLIP's D dimensions as much as 0.12 perturbs ViT-L/14's 768 (``sigma_for_dim``), the
   mean-shift, covariance-noise and linear adapters (their statistics from the training rows' paired embeddings),
   and the oracle head trained on the training *images*.
5. Captioning: a small T5 (from a config) prefixed by the CLIP embedding learns to write its own input caption (the
   paper's single-caption mode), then captions the test images with beam search. Metrics: digit accuracy (the caption
   names the right digit and no other), exact match (it is one of the digit's template captions) and token F1 (best
   over the digit's template captions; bag-of-words F1 as in SQuAD). BLEU via ``evaluate`` needs a download.

Writes ``results.json`` and ``report.md`` to ``--output-dir`` and the report to ``--card`` (unless ``--small``).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import torch
from datasets import Dataset
from transformers import CLIPModel, CLIPProcessor, T5Config, Trainer, TrainingArguments, default_data_collator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout this recipe belongs to

from hf_contrastive.data.close import CaptionCollator, add_clip_embeddings, embedding_matrix  # noqa: E402
from hf_contrastive.data.images import CAPTION_TEMPLATES, DIGIT_WORDS, add_captions, digit_caption, load_mnist  # noqa: E402
from hf_contrastive.hub.card import bullets, metrics_table, write_run_report  # noqa: E402
from hf_contrastive.models.close import (  # noqa: E402
    DEFAULT_SIGMA,
    CLOSECaptioner,
    CLOSECaptionerConfig,
    CLOSEClassifier,
    CLOSEClassifierConfig,
    FrozenCLIP,
    sigma_for_dim,
)

MNIST = "../shared/data/mnist-test"
CARD = "model_cards/close-digits.md"
SMALL = {"train_rows": 256, "eval_start": 256, "eval_rows": 64, "head_steps": 5, "caption_steps": 3}
DIGIT_NUMERALS = tuple(str(digit) for digit in range(10))
CLASSIFIER_COLUMNS = ("image accuracy", "caption accuracy")
CAPTIONER_COLUMNS = ("digit accuracy", "exact match", "token F1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--clip-path", required=True, help="A CLIPModel + CLIPProcessor folder (recipes/clip_digits.py saves one)."
    )
    parser.add_argument("--mnist", default=MNIST)
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/close-digits"))
    parser.add_argument("--card", type=Path, default=Path(CARD))
    parser.add_argument("--train-rows", type=int, default=8000)
    parser.add_argument("--eval-start", type=int, default=8000)
    parser.add_argument("--eval-rows", type=int, default=2000)
    parser.add_argument("--head-steps", type=int, default=300)
    parser.add_argument("--head-hidden", type=int, default=256, help="MLP hidden size of the classifier (0: linear).")
    parser.add_argument("--caption-steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--sigma", type=float, default=DEFAULT_SIGMA["single_caption"], help="The paper's sigma.")
    parser.add_argument("--beams", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--small", action="store_true", help="Smoke run: a few rows and steps, no card.")
    args = parser.parse_args(argv)
    if args.small:
        vars(args).update(SMALL)
    return args


# ----------------------------------------------------------------------------------------------- data and CLIP
def load_splits(args) -> tuple[Dataset, Dataset]:
    """Training rows with captions, and the test rows (with captions too: the text-input sanity column)."""
    rows = load_mnist(args.mnist, limit=max(args.train_rows, args.eval_start + args.eval_rows))
    train = add_captions(rows.select(range(args.train_rows)), seed=args.seed)
    test = add_captions(rows.select(range(args.eval_start, args.eval_start + args.eval_rows)), seed=args.seed + 1)
    return train, test


def embed_splits(clip: FrozenCLIP, train: Dataset, test: Dataset) -> tuple[Dataset, Dataset]:
    """Cache the frozen CLIP's caption and image embeddings of both splits (``text_embedding``, ``image_embedding``)."""
    embedded = []
    for split in (train, test):
        split = add_clip_embeddings(split, clip.embed_texts, "caption", "text_embedding")
        embedded.append(add_clip_embeddings(split, clip.embed_images, "image", "image_embedding"))
    return embedded[0], embedded[1]


def modality_gap(train: Dataset) -> dict[str, float]:
    """How far apart the frozen CLIP puts paired captions and images (normalised embeddings of the training rows)."""
    text, image = embedding_matrix(train, "text_embedding"), embedding_matrix(train, "image_embedding")
    return {
        "paired cosine": (text * image).sum(dim=1).mean().item(),
        "mean-difference norm": (image.mean(dim=0) - text.mean(dim=0)).norm().item(),
        "text-text cosine": (text.mean(dim=0).norm() ** 2).item(),  # mean pairwise cosine, self-pairs included
        "image-image cosine": (image.mean(dim=0).norm() ** 2).item(),
    }


# ----------------------------------------------------------------------------------------------- training
def trainer_args(args, name: str, steps: int, learning_rate: float) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(args.output_dir / name),
        max_steps=steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type="linear",
        logging_steps=max(steps // 5, 1),
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        use_cpu=args.device == "cpu",
        disable_tqdm=True,
    )


def classifier_settings(args, dim: int) -> dict[str, dict]:
    """Config overrides per classification row; the oracle trains on image embeddings instead of captions."""
    scaled = sigma_for_dim(args.sigma, dim)
    return {
        "no noise (sigma 0)": {"adapter": "noise", "sigma": 0.0},
        f"noise (sigma {args.sigma:g}, paper)": {"adapter": "noise", "sigma": args.sigma},
        f"noise (sigma {scaled:.3f}, D-scaled)": {"adapter": "noise", "sigma": scaled},
        f"mean shift + noise (sigma {scaled:.3f})": {"adapter": "mean_shift", "sigma": scaled},
        f"cov noise + noise (sigma {scaled:.3f})": {"adapter": "cov_noise", "sigma": scaled},
        f"linear + noise (sigma {scaled:.3f})": {"adapter": "linear", "sigma": scaled},
        "oracle (trained on images)": {"adapter": "noise", "sigma": 0.0, "train_on": "image_embedding"},
    }


def captioner_settings(args, dim: int) -> dict[str, dict]:
    """Config overrides per captioning row (fewer than for classification: a captioner trains for a minute)."""
    scaled = sigma_for_dim(args.sigma, dim)
    return {
        "no noise (sigma 0)": {"sigma": 0.0},
        f"noise (sigma {args.sigma:g}, paper)": {"sigma": args.sigma},
        f"noise (sigma {scaled:.3f}, D-scaled)": {"sigma": scaled},
        f"mean shift + noise (sigma {scaled:.3f})": {"adapter": "mean_shift", "sigma": scaled},
        "oracle (trained on images)": {"sigma": 0.0, "train_on": "image_embedding"},
    }


def training_column(settings: dict) -> tuple[str, dict]:
    """The embedding column a row trains on (captions unless it is an oracle) and its config overrides."""
    overrides = dict(settings)
    return overrides.pop("train_on", "text_embedding"), overrides


def fit_statistics(model, train: Dataset) -> None:
    """Mean shift, covariance and linear adapters read the training rows' paired (caption, image) embeddings."""
    if model.config.adapter != "noise":
        model.fit_adapter(embedding_matrix(train, "text_embedding"), embedding_matrix(train, "image_embedding"))


def train_classifier(args, clip: FrozenCLIP, train: Dataset, name: str, settings: dict) -> CLOSEClassifier:
    column, settings = training_column(settings)
    config = CLOSEClassifierConfig(
        clip_name_or_path=clip.name_or_path,
        clip_dim=clip.dim,
        num_labels=10,
        id2label=dict(enumerate(DIGIT_WORDS)),
        hidden_size=args.head_hidden or None,
        **settings,
    )
    torch.manual_seed(args.seed)
    model = CLOSEClassifier(config)
    fit_statistics(model, train)
    rows = train.select_columns([column, "label"])
    Trainer(
        model,
        trainer_args(args, f"classifier/{name}", args.head_steps, 3e-3),
        train_dataset=rows,
        data_collator=default_data_collator,
    ).train()
    return model.eval()


@torch.no_grad()
def classifier_accuracy(model: CLOSEClassifier, test: Dataset) -> dict[str, float]:
    labels = torch.tensor(list(test["label"]))
    accuracy = {}
    for metric, column in zip(CLASSIFIER_COLUMNS, ("image_embedding", "text_embedding")):
        logits = model(**{column: embedding_matrix(test, column).to(model.device)}).logits.cpu()
        accuracy[metric] = (logits.argmax(dim=1) == labels).float().mean().item()
    return accuracy


def train_captioner(args, clip: FrozenCLIP, train: Dataset, name: str, settings: dict) -> CLOSECaptioner:
    tokenizer = clip.processor.tokenizer
    decoder = T5Config(
        vocab_size=len(tokenizer), d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2, num_decoder_layers=2,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id, decoder_start_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    column, settings = training_column(settings)
    config = CLOSECaptionerConfig(
        decoder_config=decoder, clip_name_or_path=clip.name_or_path, clip_dim=clip.dim, **settings
    )
    torch.manual_seed(args.seed)
    model = CLOSECaptioner(config)
    fit_statistics(model, train)
    rows = train.select_columns([column, "caption"])
    training = trainer_args(args, f"captioner/{name}", args.caption_steps, 1e-3)
    training.remove_unused_columns = False  # the collator reads the caption column
    Trainer(model, training, train_dataset=rows, data_collator=CaptionCollator(tokenizer, column)).train()
    return model.eval()


# ----------------------------------------------------------------------------------------------- caption metrics
def token_f1(prediction: str, reference: str) -> float:
    """Bag-of-words F1 between two lower-cased, whitespace-split strings (SQuAD's token F1)."""
    predicted, expected = prediction.lower().split(), reference.lower().split()
    overlap = sum((Counter(predicted) & Counter(expected)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(expected)
    return 2 * precision * recall / (precision + recall)


def caption_scores(caption: str, label: int) -> dict[str, float]:
    """Digit accuracy, exact match and best token F1 of one caption against digit ``label``'s template captions."""
    references = [digit_caption(label, template).lower() for template in CAPTION_TEMPLATES]
    named = {word for word in caption.lower().split() if word in DIGIT_WORDS or word in DIGIT_NUMERALS}
    right = {DIGIT_WORDS[label], str(label)}
    return {
        "digit accuracy": float(bool(named) and named <= right),
        "exact match": float(caption.strip().lower() in references),
        "token F1": max(token_f1(caption, reference) for reference in references),
    }


@torch.no_grad()
def captioner_metrics(args, model: CLOSECaptioner, tokenizer, test: Dataset) -> tuple[dict[str, float], list[str]]:
    captions = []
    images = embedding_matrix(test, "image_embedding").to(model.device)
    for batch in images.split(args.batch_size):
        ids = model.generate(image_embedding=batch, num_beams=args.beams, max_new_tokens=16)
        captions += tokenizer.batch_decode(ids, skip_special_tokens=True)
    scores = [caption_scores(caption, label) for caption, label in zip(captions, test["label"])]
    return {metric: sum(score[metric] for score in scores) / len(scores) for metric in CAPTIONER_COLUMNS}, captions


# ----------------------------------------------------------------------------------------------- main
def run(args) -> dict:
    train, test = load_splits(args)
    clip_path = args.clip_path
    clip = FrozenCLIP(CLIPModel.from_pretrained(clip_path).to(args.device), CLIPProcessor.from_pretrained(clip_path))
    train, test = embed_splits(clip, train, test)
    results: dict = {"settings": {key: str(value) for key, value in vars(args).items()}, "clip": clip_path}
    results["dimension"], results["modality_gap"] = clip.dim, modality_gap(train)
    results["classification"] = {
        name: classifier_accuracy(train_classifier(args, clip, train, name, settings), test)
        for name, settings in classifier_settings(args, clip.dim).items()
    }
    results["captioning"], results["caption_examples"] = {}, {}
    for name, settings in captioner_settings(args, clip.dim).items():
        model = train_captioner(args, clip, train, name, settings)
        metrics, captions = captioner_metrics(args, model, clip.processor.tokenizer, test)
        results["captioning"][name] = metrics
        results["caption_examples"][name] = [
            f"{DIGIT_WORDS[label]}: {caption}" for label, caption in zip(test["label"][:5], captions)
        ]
    return results


def transfer_summary(results: dict, task: str, metric: str) -> str:
    """One sentence: the text-only rows' ``metric`` on images against the no-noise row and the oracle."""
    rows = results[task]
    text_only = {name: values[metric] for name, values in rows.items() if not name.startswith(("oracle", "no noise"))}
    best = max(text_only, key=text_only.get)
    return (
        f"{task.capitalize()}, {metric} on the test images: without noise {rows['no noise (sigma 0)'][metric]:.4f}; "
        f"best text-only setting ({best}) {text_only[best]:.4f}; oracle trained on images "
        f"{rows['oracle (trained on images)'][metric]:.4f}."
    )


def report(results: dict, command: str) -> str:
    classification = metrics_table(results["classification"], CLASSIFIER_COLUMNS, row_header="classifier head")
    captioning = metrics_table(results["captioning"], CAPTIONER_COLUMNS, row_header="captioner")
    settings = results["settings"]
    return f"""# CLOSE on MNIST digits: text-only training, image evaluation

Command: `{command}`

Frozen CLIP: `{results["clip"]}`. Heads and captioners are trained on CLIP *caption*
embeddings of MNIST test rows 0..{int(settings["train_rows"]) - 1} (template captions, no image seen), and evaluated on
CLIP *image* embeddings of rows {settings["eval_start"]}..{int(settings["eval_start"]) + int(settings["eval_rows"]) - 1}.
Mean-shift, covariance and linear adapters use the paired (caption, image) embeddings of the training rows for their
statistics; the oracle head is trained on the training images. "caption accuracy" feeds the test rows' own
captions (shift / linear adapters applied, no noise).

Modality gap of this CLIP on the training rows (normalised embeddings, D = {results["dimension"]}):
{bullets((name, f"{value:.3f}") for name, value in results["modality_gap"].items())}

## Classification (accuracy; head: {"MLP, hidden " + settings["head_hidden"] if settings["head_hidden"] != "0" else "linear"})

{classification}

## Captioning (single-caption mode, beam {settings["beams"]}; metrics on test images)

Digit accuracy: the caption names the right digit and no other. Exact match: it is one of the digit's template
captions. Token F1: best bag-of-words F1 against the digit's template captions (BLEU via `evaluate` needs a download).

{captioning}

## Summary

- {transfer_summary(results, "classification", "image accuracy")}
- {transfer_summary(results, "captioning", "digit accuracy")}
"""


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    results = run(args)
    command = " ".join(["python recipes/close_digits.py", *(argv if argv is not None else sys.argv[1:])])
    text = report(results, command)
    write_run_report(args.output_dir, results, text, None if args.small else args.card)
    print(text)
    return results


if __name__ == "__main__":
    main()
