"""GraphRecTrainer: BPR + a graph-contrastive objective for LightGCN / XSimGCL / DCCF, one propagation per step.

    data = InteractionData.from_dataset(interactions)                   # columns user_id, item_id[, timestamp]
    model = XSimGCL.from_data(data)                                     # the training graph is the model's state
    args = GraphRecConfig(output_dir="out/xsimgcl", num_train_epochs=20, eval_strategy="epoch")
    trainer = GraphRecTrainer(model, args, evaluator=FullRankingEvaluator.from_data(data, split="test"))
    trainer.train()
    trainer.save_model()                                                # reloads with AutoModel, recommends alone

    accelerate launch --num_processes 2 my_script.py                    # splits the triples over 2 ranks

Training data: (user, positive, negative) triples drawn from the model's own training graph by
:class:`~hf_contrastive.data.recsys.TripleSampler`, redrawn at the start of every epoch from ``seed + epoch`` (so
every rank draws the same triples and the trainer's distributed sampler splits them).
``triple_sampling="interaction"`` (SELFRec: every training pair once per epoch, one negative each) or ``"user"``
(DCCF: ``triples_per_epoch`` users uniform with replacement; 409,600 in the paper). Negatives are uniform over the
items the user has not interacted with.

A step runs ONE full-graph propagation (``model()``) and the objective computes every term from it (BPR, the
regularisers, the contrast), as both specs require. Defaults are the papers': Adam (AdamW with weight decay 0),
lr 1e-3, constant schedule, batch 2048 (set 10240 for DCCF).

Multi-GPU (DDP through ``accelerate``): the batch of triples is split over the ranks and the propagation is
REPLICATED (every rank propagates the whole graph with its full copy of the embeddings, which DDP keeps equal).
That costs the graph convolution W times but needs no communication beyond DDP's gradient all-reduce and a
gather of the batch's integer ids; objectives make the result exact (see ``objectives.bpr``). accelerate's
``even_batches`` gives every rank the same batch size (the last batch of an epoch repeats a few triples).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback

from ..data.recsys import TripleSampler
from ..hub import CardEvalResult, ContrastiveCardData, build_model_card
from ..models.graph_rec import LightGCN
from ..objectives import build_objective
from ..objectives.bpr import GraphRecObjective
from .common import GuardedTrainingArguments, TrainerBookkeeping, card_repo_id, evaluation_by_evaluator_only

DEFAULT_OBJECTIVES = {"lightgcn": "bpr", "xsimgcl": "xsimgcl", "dccf": "dccf"}


@dataclass
class GraphRecConfig(GuardedTrainingArguments):
    """``TrainingArguments`` with the graph-CF papers' defaults and the objective and triple sampling."""

    objective: str | None = field(
        default=None,
        metadata={"help": "Objective name (bpr, xsimgcl, dccf); default: the model type's (LightGCN -> bpr)."},
    )
    objective_options: dict | None = field(
        default=None, metadata={"help": "Keyword arguments of the objective (cl_weight, temperature, ...)."}
    )
    triple_sampling: Literal["interaction", "user"] = field(
        default="interaction",
        metadata={
            "help": "'interaction': every training pair once per epoch (SELFRec); 'user': uniform users (DCCF)."
        },
    )
    triples_per_epoch: int | None = field(
        default=None, metadata={"help": "Triples per epoch in 'user' sampling (DCCF: 409600); default: #interactions."}
    )
    per_device_train_batch_size: int = field(default=2048, metadata={"help": "Triples per step and rank (SELFRec)."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate (both papers: 1e-3)."})
    lr_scheduler_type: str = field(default="constant", metadata={"help": "Constant learning rate (both papers)."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept False: batches are triples."})

    def __post_init__(self):
        super().__post_init__()
        if self.triple_sampling not in ("interaction", "user"):
            raise ValueError(f"triple_sampling must be 'interaction' or 'user', got {self.triple_sampling!r}.")
        if self.triples_per_epoch is not None and self.triples_per_epoch < 1:
            raise ValueError(f"triples_per_epoch must be >= 1, got {self.triples_per_epoch}.")
        if self.triples_per_epoch is not None and self.triple_sampling != "user":
            raise ValueError("triples_per_epoch applies to triple_sampling='user' only (interaction mode: all pairs).")


class EpochTriples(Dataset):
    """One epoch of triples ``{"user_id", "item_id", "neg_item_id"}`` from a ``TripleSampler``, redrawn per epoch.

    ``set_epoch(e)`` draws with ``torch.Generator().manual_seed(seed + e)``: identical on every rank.
    ``__getitems__`` hands the DataLoader a whole batch at once (no per-row collation).
    """

    def __init__(self, sampler: TripleSampler, seed: int) -> None:
        self.sampler, self.seed, self.epoch = sampler, seed, None
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self.triples = self.sampler.sample(torch.Generator().manual_seed(self.seed + epoch))

    def __len__(self) -> int:
        return len(self.sampler)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {column: values[index] for column, values in self.triples.items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return {column: values[index] for column, values in self.triples.items()}


def collate_triples(batch: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """A batch from ``EpochTriples.__getitems__`` as is; a list of rows stacked into [B] columns."""
    if isinstance(batch, dict):
        return batch
    return {column: torch.stack([row[column] for row in batch]) for column in batch[0]}


class RedrawTriples(TrainerCallback):
    """Redraw the training triples (new negatives, new order) at the start of every epoch."""

    def __init__(self, dataset: EpochTriples) -> None:
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(math.floor(state.epoch or 0))


class GraphRecTrainer(TrainerBookkeeping, Trainer):
    """Train a LightGCN-family model (:mod:`hf_contrastive.models.graph_rec`) with BPR + its objective.

    Args:
        model: a ``LightGCN``, ``XSimGCL`` or ``DCCF`` built with ``from_data`` (its graph is the training data).
        args: a :class:`GraphRecConfig`.
        objective: a graph objective instance; default: ``args.objective`` (or the model type's) with
            ``args.objective_options``.
        evaluator: ``evaluator(score_users) -> dict`` (e.g. ``FullRankingEvaluator``), called on the main process
            with ``score_users(user_indices [b]) -> scores [b, I]`` of the clean (noise-free) propagation.
        train_dataset: default: the epoch triples of the model's graph (``EpochTriples``).
    """

    _tag_names = ["hf_contrastive", "recommendation", "graph-collaborative-filtering"]
    # compute_loss returns a per-batch mean: the Trainer must divide it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model: LightGCN,
        args: GraphRecConfig,
        objective: GraphRecObjective | None = None,
        evaluator: Callable[[Callable[[torch.Tensor], torch.Tensor]], dict[str, float]] | None = None,
        train_dataset: Dataset | None = None,
        **trainer_kwargs,
    ) -> None:
        if not isinstance(args, GraphRecConfig):
            raise TypeError(f"args must be a GraphRecConfig, got {type(args).__name__}.")
        if not isinstance(model, LightGCN):
            raise TypeError(f"GraphRecTrainer trains LightGCN / XSimGCL / DCCF models, got {type(model).__name__}.")
        model_type = model.config.model_type
        self.objective = objective or build_objective(
            args.objective or DEFAULT_OBJECTIVES[model_type], **(args.objective_options or {})
        )
        if model_type not in self.objective.model_types:
            raise ValueError(
                f"The {self.objective.name!r} objective needs a model of type {list(self.objective.model_types)}, "
                f"got {model_type!r} (it reads views that only those models propagate)."
            )
        if train_dataset is None:
            sampler = TripleSampler(
                torch.stack([model.graph_users, model.graph_items], dim=1).cpu(),
                model.config.num_users,
                model.config.num_items,
                mode=args.triple_sampling,
                num_triples=args.triples_per_epoch,
            )
            train_dataset = EpochTriples(sampler, args.seed)
        with evaluation_by_evaluator_only(args, evaluator, None):
            super().__init__(
                model=model,
                args=args,
                train_dataset=train_dataset,
                data_collator=trainer_kwargs.pop("data_collator", collate_triples),
                **trainer_kwargs,
            )
        self.evaluator = evaluator
        self.objective.to(self.args.device)
        if isinstance(train_dataset, EpochTriples):
            self.add_callback(RedrawTriples(train_dataset))
        self._init_bookkeeping()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """One propagation, then every loss term of the objective from it."""
        outputs = model()
        result = self.objective(outputs, inputs)
        if model.training:
            self._accumulate_logs(result.logs)
            self._check_finite(result.loss)
        return (result.loss, outputs) if return_outputs else result.loss

    # ----------------------------------------------------------------------------------------------- evaluation
    def evaluator_argument(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """``score_users(user_indices [b]) -> [b, I]`` from one clean propagation of the model as it is now."""
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                output = model(perturbed=False)
        finally:
            model.train(was_training)
        users, items = output.user_embeddings, output.item_embeddings

        def score_users(user_indices: torch.Tensor) -> torch.Tensor:
            return users[user_indices.to(users.device)] @ items.T

        return score_users

    # ----------------------------------------------------------------------------------------------- card
    def contrastive_facts(self) -> dict[str, Any]:
        """Batch, sampling and propagation facts of this run (for the card)."""
        args, config = self.args, self.accelerator.unwrap_model(self.model).config
        return {
            "world_size": args.world_size,
            "per_device_batch": args.per_device_train_batch_size,
            "global_batch": args.per_device_train_batch_size * args.world_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "objective": self.objective.name,
            "temperature": getattr(self.objective, "temperature", None),
            "sampled negatives per triple": 1,
            "triple sampling": args.triple_sampling,
            "triples per epoch": len(self.train_dataset),
            "graph": f"{config.num_users} users, {config.num_items} items, {config.num_interactions} interactions",
            "propagation": "full graph, one per step, replicated on every rank",
        }

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | list[str] | None = None,
        eval_results: list[CardEvalResult] | None = None,
        tags: list[str] | None = None,
        **kwargs,
    ) -> None:
        """Write ``README.md`` into ``output_dir`` (``eval_results`` default to the evaluator's last metrics)."""
        if not self.is_world_process_zero():
            return
        repo_id = card_repo_id(self.args, model_name)
        model = self.accelerator.unwrap_model(self.model)
        card = build_model_card(
            ContrastiveCardData(
                objective=self.objective.name,
                repo_id=repo_id,
                model_name=model_name,
                paper=self.objective.paper,
                objective_config=self.objective.get_config_dict(),
                datasets=[dataset_name] if isinstance(dataset_name, str) else list(dataset_name or []),
                pipeline_tag="other",
                summary=self._card_summary(model),
                usage=self._card_usage(repo_id),
                tags=[*self._tag_names, model.config.model_type, *(tags or [])],
                model_details={
                    key: getattr(model.config, key)
                    for key in ("num_users", "num_items", "embed_size", "n_layers", "eps", "cl_layer", "n_intents")
                    if hasattr(model.config, key)
                },
                contrastive_facts=self.contrastive_facts(),
                training_args=self.args,
                eval_results=eval_results
                if eval_results is not None
                else self._logged_eval_results(task_type="recommendation", task_name="Top-K recommendation"),
                training_summary=self._training_summary(),
                citations=[self.objective.citation] if self.objective.citation else [],
            )
        )
        card.save(os.path.join(self.args.output_dir, "README.md"))

    def _card_summary(self, model: LightGCN) -> str:
        return (
            f"A {type(model).__name__} graph collaborative-filtering recommender trained with `{self.objective.name}` "
            "using the `hf_contrastive` library. The training interaction graph and the raw user / item id maps are "
            "part of the saved model, so the reloaded model recommends raw item ids for known users without the "
            "training data (users unseen in training have no embedding and raise a KeyError)."
        )

    def _card_usage(self, repo_id: str) -> str:
        return f"""```python
from transformers import AutoModel

import hf_contrastive  # noqa: F401  (registers the model classes with AutoModel)

model = AutoModel.from_pretrained("{repo_id}").eval()
items, scores = model.recommend(["some-user-id"], k=20)  # training items of the user are excluded
```"""
