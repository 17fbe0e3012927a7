"""PlackettLuceTrainer: Neural PG-Rank (arXiv:2310.04407) on ranking rows, with the ContrastiveTrainer machinery.

A step embeds the batch's queries and all their candidates in one merged forward (chunked, or under the gradient
cache: memory bounded by a token budget with exact gradients, however large the candidate sets), then the
:class:`~hf_contrastive.objectives.plackett_luce.PlackettLuceObjective` samples rankings from the Plackett-Luce
policy of every query and returns the REINFORCE surrogate loss. Rows: ``query``, ``documents``, ``labels`` (graded
relevance), optional ``judged_relevance`` (see :mod:`hf_contrastive.data.ranking`); candidate sets mined with a
model come from :mod:`hf_contrastive.data.retrieval`.

Distributed runs are exact: the loss of a query does not involve other queries (no gathers), each rank averages over
its B queries and DDP averages the ranks, and the sampling noise of a query depends only on (seed, step, position in
the global batch), so 2 processes x B queries train exactly like 1 process x 2B queries.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from ..data.ranking import RankingCollator, RankingDatasetReport, validate_ranking_dataset
from ..evaluation.ranking_metrics import UTILITIES
from ..hub import dataset_statistics
from ..objectives.plackett_luce import PlackettLuceObjective
from .contrastive import ContrastiveConfig, ContrastiveTrainer, check_tokenizer_matches_model

logger = logging.getLogger(__name__)

# Evaluation losses use the same draws at every evaluation (training steps are >= 0), so they compare over time.
EVALUATION_NOISE_STEP = -1
DOCUMENT_SAMPLE_SIZE = 1000


@dataclass
class PlackettLuceConfig(ContrastiveConfig):
    """``ContrastiveConfig`` plus the policy-gradient settings of Neural PG-Rank."""

    objective: str = field(
        default="plackett_luce", metadata={"help": "Objective name; the PlackettLuceTrainer needs 'plackett_luce'."}
    )
    temperature: float = field(
        default=0.05,
        metadata={"help": "tau in u = sim / tau, the Plackett-Luce logits (unverified: 0.05 for cosine, ~1 for dot)."},
    )
    utility: str = field(
        default="ndcg", metadata={"help": f"Ranking utility to maximise, at cutoff k: one of {list(UTILITIES)}."}
    )
    k: int = field(default=10, metadata={"help": "Utility cutoff and length of the sampled ranking prefixes."})
    num_samples: int = field(
        default=8, metadata={"help": "Rankings sampled per query (>= 2, for the leave-one-out baseline)."}
    )
    query_max_length: int | None = field(
        default=None, metadata={"help": "Truncate queries to this many tokens (default: max_length)."}
    )
    max_candidates: int | None = field(
        default=None,
        metadata={
            "help": "Cap on candidates per query: all relevant ones are kept, then non-relevant ones from the top of "
            "the list (the hardest, in a mined list). None keeps every candidate."
        },
    )
    no_duplicates_sampler: bool = field(
        default=False,
        metadata={
            "help": "Must stay False: a query's candidates are its own, so repeated texts are no false negatives."
        },
    )

    def objective_kwargs(self) -> dict[str, Any]:
        return {
            **super().objective_kwargs(),
            "utility": self.utility,
            "k": self.k,
            "num_samples": self.num_samples,
            "seed": self.seed,
        }


class PlackettLuceTrainer(ContrastiveTrainer):
    """Train a bi-encoder with Neural PG-Rank on ranking rows (``query``, ``documents``, ``labels``).

    Args:
        model: the encoder (a warm-started retriever is the intended use; PEFT works too).
        args: a :class:`PlackettLuceConfig`.
        train_dataset / eval_dataset: ranking rows, validated in full here, before any step (errors name the column
            and row; queries without a relevant candidate are counted in ``dataset_report`` and logged).
        processing_class: the tokenizer (required unless ``data_collator`` is given).
        objective: a :class:`PlackettLuceObjective`; default: built from ``args``.
        evaluator: ``evaluator(encode_fn) -> dict[str, float]`` (e.g. a retrieval or reranking evaluator), as in
            :class:`ContrastiveTrainer`.

    The per-device batch counts queries and may be 1; the default sampler shuffles the rows (the no-duplicates
    sampler of in-batch objectives does not apply).
    """

    _tag_names = [*ContrastiveTrainer._tag_names, "learning-to-rank", "policy-gradient"]

    def __init__(
        self,
        model=None,
        args: PlackettLuceConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        objective: PlackettLuceObjective | None = None,
        evaluator=None,
        data_collator=None,
        **kwargs,
    ) -> None:
        args = args or PlackettLuceConfig(output_dir="outputs")
        if not isinstance(args, PlackettLuceConfig):
            raise TypeError(f"args must be a PlackettLuceConfig, got {type(args).__name__}.")
        self.dataset_report = self._validate(train_dataset, eval_dataset, args.max_candidates)
        if data_collator is None:
            if processing_class is None:
                raise ValueError("PlackettLuceTrainer needs processing_class (the tokenizer) or a data_collator.")
            check_tokenizer_matches_model(processing_class, model)
            data_collator = RankingCollator(
                processing_class, args.max_length, args.query_max_length, args.max_candidates
            )
        self._noise_step_of, self._micro_batch = -1, 0
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            objective=objective,
            evaluator=evaluator,
            text_columns=["query"],
            data_collator=data_collator,
            **kwargs,
        )

    @staticmethod
    def _validate(train_dataset, eval_dataset, max_candidates: int | None) -> RankingDatasetReport | None:
        """Check every ranking row now; report (and log) the training set's counts."""
        if eval_dataset is not None:
            validate_ranking_dataset(eval_dataset, max_candidates)
        if train_dataset is None:
            return None
        report = validate_ranking_dataset(train_dataset, max_candidates)
        if report.queries_without_relevant:
            logger.warning(
                f"{report.queries_without_relevant} of {report.rows} training queries have no relevant candidate: "
                "every sampled ranking scores 0, so they add no gradient (logged per step as skipped_no_relevant)."
            )
        return report

    # ----------------------------------------------------------------------------------------------- checks
    def check_configuration(self) -> None:
        """The ContrastiveTrainer's checks, plus ours."""
        super().check_configuration()
        args = self.args
        if not isinstance(self.objective, PlackettLuceObjective):
            raise ValueError(
                f"PlackettLuceTrainer trains the plackett_luce objective, got {self.objective.name!r}: set "
                "objective='plackett_luce' or use ContrastiveTrainer."
            )
        if args.no_duplicates_sampler:
            raise ValueError(
                "no_duplicates_sampler=True does not apply to ranking rows (no in-batch negatives); set it to False."
            )
        if args.symmetric:
            raise ValueError("symmetric=True has no meaning for a ranking policy over candidates; set it to False.")
        if args.world_size > 1 and not args.dataloader_drop_last:
            raise ValueError(
                "Multi-process PG-Rank needs dataloader_drop_last=True: the loss averages B queries per rank, which "
                "equals the global average only when every rank holds the same B."
            )
        if args.gradient_cache and self.cache_token_budget < (args.query_max_length or args.max_length):
            raise ValueError(
                f"cache_token_budget={self.cache_token_budget} is smaller than query_max_length="
                f"{args.query_max_length}: a mini-batch of one long query would exceed the budget."
            )

    # ----------------------------------------------------------------------------------------------- loss
    def training_step(self, model, inputs, num_items_in_batch=None):
        inputs["noise_step"] = self._next_noise_step()
        return super().training_step(model, inputs, num_items_in_batch)

    def _next_noise_step(self) -> int:
        """``global_step * accumulation + micro-batch index``: fresh noise for every micro-batch, the same on every
        process, and continued (not restarted) when training resumes from a checkpoint."""
        step = self.state.global_step
        self._micro_batch = self._micro_batch + 1 if step == self._noise_step_of else 0
        self._noise_step_of = step
        return step * self.args.gradient_accumulation_steps + self._micro_batch

    def objective_loss(self, embeddings: torch.Tensor, inputs: dict) -> tuple[torch.Tensor, dict]:
        """Split the merged embeddings [B + C, D] into queries [B, D] and candidates [C, D]; run the objective."""
        inputs.setdefault("noise_step", EVALUATION_NOISE_STEP)
        num_queries = inputs["num_queries"]
        output = self.objective({"query": embeddings[:num_queries], "documents": embeddings[num_queries:]}, inputs)
        self._check_finite(output.loss)
        return output.loss, output.logs

    # ----------------------------------------------------------------------------------------------- facts
    def contrastive_facts(self) -> dict[str, Any]:
        """Batches, candidate sets and the policy-gradient setup (logged at the start and put in the card)."""
        args, objective, report = self.args, self.objective, self.dataset_report
        facts = {
            "world_size": args.world_size,
            "per_device_batch": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "global_batch": args.per_device_train_batch_size * args.world_size,
            "objective": objective.name,
            "utility": f"{objective.utility}@{objective.k}",
            "rankings_sampled_per_query": objective.num_samples,
            "baseline": "leave-one-out",
        }
        if report is not None:
            facts.update(
                {
                    "candidates_per_query": f"{report.mean_candidates:.1f} (min {report.min_candidates}, "
                    f"max {report.max_candidates})",
                    # Every other candidate of the list sits in the PL denominators of a relevant one.
                    "effective_negatives_per_anchor": round(report.mean_candidates - 1, 2),
                    "non_relevant_candidates_per_query": round(report.mean_non_relevant, 2),
                    "queries_without_relevant_candidate": report.queries_without_relevant,
                }
            )
        return {
            **facts,
            "max_candidates": args.max_candidates,
            "temperature": objective.temperature,
            "learnable_temperature": objective.learnable_temperature,
            "similarity": objective.similarity,
            "gradient_cache": args.gradient_cache,
            "cache_token_budget": self.cache_token_budget if args.gradient_cache else None,
            "forward_token_budget": None if args.gradient_cache else (self.forward_token_budget or None),
            "unpad_inputs": args.unpad_inputs,
            "sampler": "random",
        }

    def check_negatives(self) -> None:
        """Nothing to check: a query brings its own candidates (a batch of one query is fine)."""

    def start_message(self, facts: dict[str, Any]) -> str:
        return (
            f"Neural PG-Rank: global batch {facts['global_batch']} queries over {facts['world_size']} "
            f"process(es), {facts.get('candidates_per_query', 'unknown')} candidates per query, "
            f"{facts['rankings_sampled_per_query']} rankings sampled per query, utility {facts['utility']}, "
            f"gradient cache {'on' if facts['gradient_cache'] else 'off'}."
        )

    def _dataset_stats(self) -> dict[str, Any] | None:
        """Query lengths over the first rows, plus the lengths of the first candidate documents."""
        stats = super()._dataset_stats()
        if stats is None:
            return None
        rows = (self.train_dataset[i] for i in range(stats["sampled_rows"]))
        documents = [
            {"text": text}
            for text in itertools.islice((text for row in rows for text in row["documents"]), DOCUMENT_SAMPLE_SIZE)
        ]
        lengths = dataset_statistics(documents, ["text"], self.processing_class)["lengths"]["text"]
        stats["lengths"][f"documents (first {len(documents)} candidates)"] = lengths
        return stats
