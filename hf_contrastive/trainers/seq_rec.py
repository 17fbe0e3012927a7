"""Sequential recommendation trainers: SASRec / CL4SRec (``SeqRecTrainer``) and MCLRec's meta step (``MCLRecTrainer``).

    from hf_contrastive.data.recsys import load_seqrec_sequences
    from hf_contrastive.evaluation.recsys import LeaveOneOutEvaluator
    from hf_contrastive.models.seq_rec import SASRec, SASRecConfig
    from hf_contrastive.trainers.seq_rec import MCLRecTrainer, SeqRecConfig

    data = load_seqrec_sequences("../shared/data/seqrec-amazon/Beauty.txt")
    model = SASRec(SASRecConfig(num_items=data.num_items, item_ids=data.item_map.ids, model_augmenters=True))
    args = SeqRecConfig(output_dir="outputs/mclrec", objective="mclrec",
                        objective_options={"view_weight": 0.0, "model_view_weight": 0.05})
    trainer = MCLRecTrainer(model, args, train_dataset=data.training_instances(),
                            evaluator=LeaveOneOutEvaluator.from_data(data, "valid", name="valid"))
    trainer.train()

Rows are ``{"item_seq": list[int] (internal ids 1..n, chronological), "target": int}`` (column names in the config;
``SequenceData.training_instances`` makes them); every row is checked before the first step. The collator keeps the
last ``max_seq_len`` items, right-pads with 0 and, when the objective is contrastive, draws two CL4SRec views per
sequence (:class:`~hf_contrastive.models.seq_rec.SequenceAugmentation`, seeded by ``seed + process_index``).

Objectives (``args.objective``): ``None`` = SASRec (``L_rec``, full-softmax CE), ``"cl4srec"`` (``L_rec + lambda *
L_con(h1, h2)``), ``"mclrec"`` (``L_rec + lambda * L_cl1 + beta * (L_cl2 + 0.1 R)``; with ``SeqRecTrainer`` this is
MCLRec's ``joint=1`` mode, one optimizer over everything). ``MCLRecTrainer`` runs the paper's alternating updates.

Distributed (``accelerate launch``): the batch is split over ranks, the contrastive terms gather both views with
gradient (local anchors, global candidates), DDP averages the gradients, so a step equals the single-process step on
the global batch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import Trainer

from ..evaluation.recsys import SequenceScoreFn, pad_sequences
from ..hub import CardEvalResult, ContrastiveCardData, build_model_card
from ..models.seq_rec import SequenceAugmentation
from ..objectives import ContrastiveObjective, build_objective
from .common import GuardedTrainingArguments, TrainerBookkeeping, card_repo_id, evaluation_by_evaluator_only

AUGMENTER_OPTIMIZER_FILE = "augmenter_optimizer.pt"
SASREC_CITATION = """@inproceedings{kang2018sasrec,
  title = {Self-Attentive Sequential Recommendation},
  author = {Kang, Wang-Cheng and McAuley, Julian},
  booktitle = {IEEE International Conference on Data Mining (ICDM)},
  year = {2018}
}"""


@dataclass
class SeqRecConfig(GuardedTrainingArguments):
    """``TrainingArguments`` with MCLRec's optimiser defaults, the objective and the augmentation ratios."""

    objective: str | None = field(
        default=None, metadata={"help": "None (SASRec), 'cl4srec' or 'mclrec' (see hf_contrastive.objectives)."}
    )
    objective_options: dict | str | None = field(
        default=None, metadata={"help": "Objective hyperparameters, e.g. {view_weight: 0.0, model_view_weight: 0.05}."}
    )
    crop_keep: float = field(default=0.5, metadata={"help": "Crop keeps floor(crop_keep * len) items (MCLRec: 0.5)."})
    mask_ratio: float = field(default=0.5, metadata={"help": "Mask zeroes floor(mask_ratio * len) items (0.5)."})
    reorder_ratio: float = field(default=0.8, metadata={"help": "Reorder shuffles floor(ratio * len) items (0.8)."})
    item_seq_column: str = field(default="item_seq", metadata={"help": "Column with the history (item ids 1..n)."})
    target_column: str = field(default="target", metadata={"help": "Column with the next item id (1..n)."})
    gather_across_devices: bool = field(
        default=True, metadata={"help": "Contrastive negatives from every rank (local loss, exact gradients)."}
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate (MCLRec: 1e-3, both steps)."})
    weight_decay: float = field(default=0.0, metadata={"help": "Weight decay (MCLRec: 0, i.e. Adam)."})
    max_grad_norm: float = field(default=0.0, metadata={"help": "Gradient clipping; 0 = none (RecBole default)."})
    lr_scheduler_type: str = field(default="constant", metadata={"help": "Constant learning rate (RecBole)."})
    per_device_train_batch_size: int = field(default=256, metadata={"help": "Sequences per device (MCLRec: 256)."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the collator reads the history and target columns."}
    )
    dataloader_drop_last: bool = field(
        default=True, metadata={"help": "Equal batch sizes on every rank (required by the gather)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.objective_options, str):
            self.objective_options = json.loads(self.objective_options)
        self.augmentation = SequenceAugmentation(self.crop_keep, self.mask_ratio, self.reorder_ratio)


class SeqRecCollator:
    """Rows -> ``item_seq`` [B, L] (last ``max_seq_len`` items, right-padded 0), ``item_seq_len`` [B], ``labels`` [B]
    and, with an ``augmentation``, two views ``aug_seq_1/2`` [B, L'] and ``aug_len_1/2`` [B] (seeded generator).

    In the main process the views come from a generator seeded with ``seed``. A DataLoader worker holds a copy of
    that generator, so every worker would repeat the others' draws (and, with workers re-created each epoch, its own
    of the epoch before); a worker therefore draws from a generator seeded by the worker's own seed (which the
    DataLoader derives per worker and per epoch from the seeded global RNG) and ``seed`` (which differs per rank).
    """

    def __init__(
        self,
        max_seq_len: int,
        augmentation: SequenceAugmentation | None = None,
        seed: int = 0,
        item_seq_column: str = "item_seq",
        target_column: str = "target",
    ) -> None:
        self.max_seq_len = max_seq_len
        self.augmentation = augmentation
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self._worker_generator: tuple[int, torch.Generator] | None = None  # (worker seed, its generator)
        self.item_seq_column = item_seq_column
        self.target_column = target_column

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        histories = [list(row[self.item_seq_column])[-self.max_seq_len :] for row in rows]
        item_seq, item_seq_len = pad_sequences(histories, self.max_seq_len)
        batch = {
            "item_seq": item_seq,
            "item_seq_len": item_seq_len,
            "labels": torch.tensor([row[self.target_column] for row in rows], dtype=torch.long),
        }
        if self.augmentation is not None:
            generator = self._views_generator()
            first, second = zip(*(self.augmentation.augment_pair(history, generator) for history in histories))
            batch["aug_seq_1"], batch["aug_len_1"] = pad_sequences(first, self.max_seq_len)
            batch["aug_seq_2"], batch["aug_len_2"] = pad_sequences(second, self.max_seq_len)
        return batch

    def _views_generator(self) -> torch.Generator:
        """``self.generator`` in the main process; in a DataLoader worker, one seeded by (worker seed, ``seed``)."""
        worker = torch.utils.data.get_worker_info()
        if worker is None:
            return self.generator
        if self._worker_generator is None or self._worker_generator[0] != worker.seed:
            seed = (worker.seed * 1_000_003 + self.seed) % 2**63
            self._worker_generator = (worker.seed, torch.Generator().manual_seed(seed))
        return self._worker_generator[1]


def check_sequence_dataset(dataset, num_items: int, item_seq_column: str, target_column: str, split: str) -> None:
    """Raise a ValueError naming the column and row when a history is empty or an id is outside ``1..num_items``."""
    columns = getattr(dataset, "column_names", None) or (list(dataset[0]) if len(dataset) else [])
    for column in (item_seq_column, target_column):
        if column not in columns:
            raise ValueError(f"The {split} dataset needs a {column!r} column (item ids 1..n); it has {columns}.")
    histories, targets = dataset[item_seq_column], dataset[target_column]
    if not isinstance(histories, list):  # a list of row dicts
        histories, targets = [row[item_seq_column] for row in dataset], [row[target_column] for row in dataset]
    for row, (history, target) in enumerate(zip(histories, targets)):
        if len(history) == 0:
            raise ValueError(f"{split} row {row}: {item_seq_column!r} is empty; SASRec needs at least one item.")
        if not all(1 <= item <= num_items for item in (*history, target)):
            raise ValueError(
                f"{split} row {row}: {item_seq_column!r} / {target_column!r} hold ids outside 1..{num_items} "
                f"(internal ids; 0 is padding): {list(history)[:10]} -> {target}. Map raw ids with the item IdMap."
            )


class SeqRecTrainer(TrainerBookkeeping, Trainer):
    """Train a :class:`~hf_contrastive.models.seq_rec.SASRec` with ``L_rec`` plus an optional contrastive objective.

    Args:
        model: a ``SASRec`` (with ``model_augmenters=True`` exactly when the objective is ``mclrec``).
        args: a :class:`SeqRecConfig`.
        train_dataset / eval_dataset: rows ``{item_seq, target}`` (internal ids); ``eval_dataset`` gives eval_loss.
        objective: an objective instance; default ``args.objective`` built with ``args.objective_options``.
        evaluator: ``evaluator(score_sequences) -> dict`` (e.g. ``LeaveOneOutEvaluator``), called with
            ``score_sequences(item_seq [B, L], item_seq_len [B]) -> [B, n + 1]`` of the current model.
        data_collator: default :class:`SeqRecCollator` (augmenting when there is an objective).
    """

    _tag_names = ["hf_contrastive", "sequential-recommendation", "sasrec"]
    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

    def __init__(
        self,
        model,
        args: SeqRecConfig,
        train_dataset=None,
        eval_dataset=None,
        objective: ContrastiveObjective | None = None,
        evaluator=None,
        data_collator=None,
        **trainer_kwargs,
    ) -> None:
        if not isinstance(args, SeqRecConfig):
            raise TypeError(f"args must be a SeqRecConfig, got {type(args).__name__}.")
        self.objective = objective or self._build_objective(args)
        self._check_model_matches_objective(model)
        for split, dataset in (("train", train_dataset), ("eval", eval_dataset)):
            if dataset is not None:
                check_sequence_dataset(
                    dataset, model.config.num_items, args.item_seq_column, args.target_column, split
                )
        if data_collator is None:
            data_collator = SeqRecCollator(
                model.config.max_seq_len,
                args.augmentation if self.objective is not None else None,
                seed=args.seed + args.process_index,  # different views on every rank, reproducible per rank
                item_seq_column=args.item_seq_column,
                target_column=args.target_column,
            )
        with evaluation_by_evaluator_only(args, evaluator, eval_dataset):
            super().__init__(
                model=model,
                args=args,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                data_collator=data_collator,
                **trainer_kwargs,
            )
        self.evaluator = evaluator
        self._init_bookkeeping()
        # Logs of updates that precede the Trainer's own in one training step (MCLRec's augmenter step): averaged
        # once per step with the final update's logs, so every logged term is a per-step mean.
        self._earlier_update_logs: dict[str, torch.Tensor] = {}

    @staticmethod
    def _build_objective(args: SeqRecConfig) -> ContrastiveObjective | None:
        if args.objective is None:
            if args.objective_options:
                raise ValueError("objective_options are set but objective is None (plain SASRec has no options).")
            return None
        defaults = {"gather_across_devices": args.gather_across_devices}
        return build_objective(args.objective, defaults, **(args.objective_options or {}))

    def _check_model_matches_objective(self, model) -> None:
        needs_augmenters = self.objective is not None and "model_view_1" in self.objective.required_columns
        if needs_augmenters != bool(model.config.model_augmenters):
            objective = self.objective.name if self.objective is not None else "None (SASRec)"
            raise ValueError(
                f"The objective {objective} {'needs' if needs_augmenters else 'does not use'} model augmenters, but "
                f"the model has model_augmenters={model.config.model_augmenters}: set SASRecConfig(model_augmenters="
                f"{needs_augmenters})."
            )

    # ----------------------------------------------------------------------------------------------- loss
    @staticmethod
    def view_embeddings(outputs) -> dict[str, torch.Tensor]:
        """``{"view_1", "view_2"}`` (h1, h2) and, with augmenters, ``{"model_view_1", "model_view_2"}`` (z1, z2)."""
        views = dict(zip(("view_1", "view_2"), outputs.view_embeddings))
        if outputs.model_view_embeddings is not None:
            views.update(zip(("model_view_1", "model_view_2"), outputs.model_view_embeddings))
        return views

    def loss_and_logs(self, model, inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor], Any]:
        """``L_rec`` plus the objective's contrastive loss (when the batch has augmented views), logs, outputs."""
        outputs = model(**inputs)
        loss, logs = outputs.loss, {"rec_loss": outputs.loss.detach()}
        if self.objective is not None and outputs.view_embeddings is not None:
            contrastive = self.objective(self.view_embeddings(outputs), inputs)
            loss = loss + contrastive.loss
            logs.update(contrastive.logs)
        return loss, logs, outputs

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """:meth:`loss_and_logs`; in training, logs once per step (with ``_earlier_update_logs`` of the same step)."""
        loss, logs, outputs = self.loss_and_logs(model, inputs)
        if model.training:
            self._accumulate_logs({**self._earlier_update_logs, **logs})
            self._earlier_update_logs = {}
            self._check_finite(loss)
        return (loss, outputs) if return_outputs else loss

    # ----------------------------------------------------------------------------------------------- evaluation
    def evaluator_argument(self) -> SequenceScoreFn:
        """``score_sequences(item_seq [B, L], item_seq_len [B]) -> [B, n + 1]`` (eval mode, no grad)."""
        model = self.accelerator.unwrap_model(self.model)

        def score_sequences(item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    return model(item_seq.to(model.device), item_seq_len.to(model.device)).logits
            finally:
                model.train(was_training)

        return score_sequences

    # ----------------------------------------------------------------------------------------------- card
    def contrastive_facts(self) -> dict[str, Any]:
        """World size, batches, negatives per anchor and the objective's weights (for the card)."""
        args = self.args
        gathered = args.per_device_train_batch_size * (args.world_size if args.gather_across_devices else 1)
        facts = {
            "world_size": args.world_size,
            "per_device_batch": args.per_device_train_batch_size,
            "global_batch": args.per_device_train_batch_size * args.world_size,
            "objective": self.objective.name if self.objective is not None else "sasrec (next-item CE only)",
        }
        if self.objective is not None:
            facts["effective_negatives_per_anchor"] = self.objective.effective_negatives(gathered, 0)
            facts["augmentation"] = vars(args.augmentation)
        return facts

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
        config = self.accelerator.unwrap_model(self.model).config
        objective = self.objective
        card = build_model_card(
            ContrastiveCardData(
                objective=objective.name if objective is not None else "sasrec",
                repo_id=repo_id,
                model_name=model_name,
                paper=objective.paper if objective is not None else "1808.09781",
                objective_config=objective.get_config_dict() if objective is not None else {},
                datasets=[dataset_name] if isinstance(dataset_name, str) else list(dataset_name or []),
                pipeline_tag="other",
                summary=self._card_summary(),
                usage=self._card_usage(repo_id),
                tags=[*self._tag_names, *(tags or [])],
                model_details={
                    key: getattr(config, key)
                    for key in (
                        "num_items",
                        "hidden_size",
                        "num_layers",
                        "num_heads",
                        "max_seq_len",
                        "model_augmenters",
                    )
                },
                contrastive_facts=self.contrastive_facts(),
                training_args=self.args,
                eval_results=eval_results
                if eval_results is not None
                else self._logged_eval_results(task_type="recommendation", task_name="Sequential recommendation"),
                training_summary=self._training_summary(),
                citations=[SASREC_CITATION] + ([objective.citation] if objective is not None else []),
            )
        )
        card.save(os.path.join(self.args.output_dir, "README.md"))

    def _card_summary(self) -> str:
        what = f"trained with `{self.objective.name}`" if self.objective is not None else "trained with next-item CE"
        return (
            f"A SASRec sequential recommender {what} using the `hf_contrastive` library. Given a user's chronological "
            "item history it scores every item as the next one; the item-id map is saved in the config, so the "
            "reloaded model recommends raw item ids without the training data."
        )

    @staticmethod
    def _card_usage(repo_id: str) -> str:
        return f"""```python
from transformers import AutoModel

import hf_contrastive  # noqa: F401  (registers SASRec with AutoModel)

model = AutoModel.from_pretrained({json.dumps(repo_id)})
history = model.config.item_ids[:3] if model.config.item_ids else [1, 2, 3]  # raw item ids, oldest first
print(model.recommend(history, k=10))  # the 10 best next items (raw ids), history items excluded
```"""


class MCLRecTrainer(SeqRecTrainer):
    """MCLRec's alternating (first-order "meta") optimisation: three updates per batch, two optimizers.

    1. encoder step: ``L0 = L_rec + lambda L_cl1 + beta (L_cl2 + 0.1 R)``, Adam step on the encoder theta only;
    2. augmenter step: re-encode the *same* augmented sequences with the updated theta' (dropout resampled), minimise
       ``lambda L_cl1 + L_cl2 + 0.1 R`` with a step of ``augmenter_optimizer`` on phi1, phi2 only;
    3. encoder step again: ``L0`` with the updated phi', stepped by the Trainer's own optimizer (and scheduler).

    The Trainer's optimizer holds the encoder parameters, ``augmenter_optimizer`` (same class and settings) the
    augmenters'. "Freezing" a side means not stepping its optimizer and clearing all gradients after each update:
    theta's gradient does not depend on whether phi requires grad, and keeping ``requires_grad`` fixed lets DDP run
    without ``find_unused_parameters``. Gradient accumulation must be 1 (the paper's step is per batch); fp16 is
    refused (its loss scaler covers only the Trainer's optimizer; use bf16), and so is clipping (none in MCLRec). The augmenter optimizer's state is saved
    with every checkpoint and restored on resume.
    """

    _tag_names = [*SeqRecTrainer._tag_names, "mclrec"]

    def __init__(self, model, args: SeqRecConfig, *positional, **kwargs) -> None:
        if args.gradient_accumulation_steps != 1:
            raise ValueError(
                f"MCLRecTrainer needs gradient_accumulation_steps=1 (three updates per batch), got "
                f"{args.gradient_accumulation_steps}."
            )
        if args.fp16:
            raise ValueError("MCLRecTrainer does not support fp16 (one loss scaler, two optimizers); use bf16.")
        if args.max_grad_norm:
            raise ValueError(
                f"MCLRecTrainer needs max_grad_norm=0 (MCLRec does not clip; a norm over both optimizers' gradients "
                f"would mix the frozen side in), got {args.max_grad_norm}."
            )
        super().__init__(model, args, *positional, **kwargs)
        if not hasattr(self.objective, "augmenter_loss"):
            name = self.objective.name if self.objective is not None else None
            raise ValueError(f"MCLRecTrainer needs the 'mclrec' objective (MCLRecLoss), got {name!r}.")
        self.augmenter_optimizer: torch.optim.Optimizer | None = None

    def create_optimizer(self, model=None):
        """The Trainer's optimizer over the encoder parameters, ``augmenter_optimizer`` over the augmenters."""
        if self.optimizer is None:
            opt_model = self.accelerator.unwrap_model(self.model if model is None else model)
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            decay = set(self.get_decay_parameter_names(opt_model))
            names = {id(p): n for n, p in opt_model.named_parameters()}

            def groups(parameters: list[torch.nn.Parameter]) -> list[dict[str, Any]]:
                with_decay = [p for p in parameters if names[id(p)] in decay]
                without = [p for p in parameters if names[id(p)] not in decay]
                return [
                    {"params": with_decay, "weight_decay": self.args.weight_decay},
                    {"params": without, "weight_decay": 0.0},
                ]

            self.optimizer = optimizer_cls(groups(opt_model.encoder_parameters()), **optimizer_kwargs)
            self.augmenter_optimizer = optimizer_cls(groups(opt_model.augmenter_parameters()), **optimizer_kwargs)
        return self.optimizer

    def training_step(self, model, inputs, num_items_in_batch=None):
        """Steps 1 and 2 here; step 3's loss and backward via the Trainer, which then steps its optimizer."""
        model.train()
        inputs = self._prepare_inputs(inputs)
        with self.compute_loss_context_manager():
            encoder_loss = self.loss_and_logs(model, inputs)[0]
        self._update(model, encoder_loss, self.optimizer)
        with self.compute_loss_context_manager():
            outputs = model(**{key: value for key, value in inputs.items() if key != "labels"})
            augmenter = self.objective.augmenter_loss(self.view_embeddings(outputs))
        self._update(model, augmenter.loss, self.augmenter_optimizer)
        self._earlier_update_logs = augmenter.logs
        return super().training_step(model, inputs, num_items_in_batch)

    def _update(self, model, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Backward, step ``optimizer`` and clear every gradient (the other side's included: it stays frozen)."""
        self._check_finite(loss)
        self.accelerator.backward(loss)
        optimizer.step()
        model.zero_grad(set_to_none=True)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save and self.augmenter_optimizer is not None:
            folder = os.path.join(self._get_output_dir(trial), f"checkpoint-{self.state.global_step}")
            torch.save(self.augmenter_optimizer.state_dict(), os.path.join(folder, AUGMENTER_OPTIMIZER_FILE))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        path = os.path.join(checkpoint, AUGMENTER_OPTIMIZER_FILE) if checkpoint else None
        if path and os.path.exists(path) and self.augmenter_optimizer is not None:
            self.augmenter_optimizer.load_state_dict(torch.load(path, map_location=self.args.device))
