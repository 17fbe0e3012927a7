"""Hydra / SimLAP: arbitrary class pairs as positives, contrasted in a subspace gated by the pair (arXiv 2410.18200).

Rows carry class labels ``y`` (``batch["labels"]``) and two views ``z1``, ``z2`` (``view_columns``). Each anchor
``i`` gets a partner class ``p_i`` (``pair_mode``), and a gate ``g_i = PairGate(y_i, p_i) in (0, 1)^D``. Every key
``k_j`` of the gathered batch is scored inside the anchor's gated subspace:

.. math::

    l_{ij} = s \\,\\Big\\langle \\frac{q_i \\odot g_i}{\\lVert q_i \\odot g_i \\rVert},
        \\frac{k_j \\odot g_i}{\\lVert k_j \\odot g_i \\rVert} \\Big\\rangle, \\qquad
    P_{ij} = [y_j = p_i], \\qquad \\mathrm{Neg}_{ij} = [y_j \\ne y_i \\wedge y_j \\ne p_i]

    L_{pair}(q, k) = \\frac{1}{\\sum_{ij} P_{ij}} \\sum_{ij} P_{ij}
        \\Big[\\log\\big(e^{l_{ij}} + \\sum_m \\mathrm{Neg}_{im} e^{l_{im}}\\big) - l_{ij}\\Big]

Each positive competes with the negatives only: other positives and the anchor's own class stay out of its
denominator. The sum over positives is normalised by the *global* number of positives (the official code's choice,
which weights rows with many positives more than per-row averaging); a row without a positive contributes 0.

Objective (``s = 1 / temperature``, or learned: ``learnable_temperature``):

- SimLAP, no momentum (``momentum_keys=False``, ``cl/losses.py``): keys are the other view, gathered with gradient;
  ``L = (L_pair(z1, z2) + L_pair(z2, z1)) / 2`` (``instance_weight = 0``).
- Hydra-MoCo (``momentum_keys=True``, ``moco/builder.py``): keys ``k1``, ``k2`` come from a momentum (EMA) encoder as
  the embeddings ``f"{view}.key"`` (a model's ``embed_column`` returning ``{"embedding": q, "key": k}``; the EMA
  update is :class:`hf_contrastive.trainers.ema.EMAUpdate`) and get no gradient;
  ``L = (w L_ins + beta L_dis + alpha L_cls) / (w + alpha + beta)`` with ``L_ins`` the MoCo-v3 InfoNCE
  ``(CE(q1 k2^T / T) + CE(q2 k1^T / T)) / 2`` (``T = instance_temperature``), ``L_dis`` the pair loss with the sampled
  partners and ``L_cls`` with ``p = y``. Defaults ``w = 1, beta = 1, alpha = 0`` (the released configs).
- ``filter_warmup_steps``: for the first training steps the queries (and keys) are detached inside the pair terms,
  so those terms train only the gate (the paper's 10 warm-up epochs; counted here in forward passes with gradient, i.e.
  optimizer steps times gradient-accumulation steps; the counter is saved with the objective's state).

Pair modes: ``"arbitrary"`` (``p = y[randperm]``, may equal ``y``), ``"identical"`` (``p = y``: a SupCon variant),
``"distinct"`` (``p = (y + U{1..C-1}) mod C``). Partners are drawn for the *gathered* batch from the objective's
own generator (``seed``), identical on every rank, and each rank takes its slice: 2 processes x B sample exactly what
1 process x 2B samples. The generator state is saved with the objective's state, so a resumed run draws the pairs
the uninterrupted run would have drawn.

Where the gate lives: in the objective. Its inputs are the labels and the sampled partners, which only the objective
sees; its parameters are training state (trained with the objective's parameters, averaged across ranks, saved in
the trainer's checkpoint ``objective.pt``) and are discarded at evaluation with the projector, as in the paper. The
gate is computed for the gathered batch on every rank, so its BatchNorm normalises over the global batch (as
SyncBN would) and the gradients stay exact under DDP. ``gate_statistics()`` reports the per-class gate activation
and entropy that the paper logs.

Memory: the gated cosine is computed as ``((q g^2) K^T) / (||q g|| sqrt(g^2 (K^2)^T))``: ``O(B * N)`` per direction
instead of the reference code's ``[B, N, D]`` gated keys. Every term is a function of the embedding matrix, so the
objective runs under the gradient cache.

Shapes: views ``[B, D]``; labels ``[B]`` int in ``[0, num_classes)``; logits and masks ``[B, W*B]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from .base import ContrastiveObjective, ObjectiveOutput, ResumableRandomState, ScaledSimilarity

HYDRA_CITATION = """@article{wu2024hydra,
  title = {Rethinking Positive Pairs in Contrastive Learning},
  author = {Wu, Jiantao and Atito, Sara and Feng, Zhenhua and Mo, Shentong and Kittler, Josef and Awais, Muhammad},
  journal = {arXiv preprint arXiv:2410.18200},
  year = {2024}
}"""

PAIR_MODES = ("arbitrary", "identical", "distinct")
GATES = ("basic", "open")


class PairGate(nn.Module):
    """The feature filter: ``g = sigmoid(MLP(fuse(E[y], E[p])))`` in ``(0, 1)^D`` for a class pair (BasicGate).

    ``MLP = ReLU -> BN(e) -> Linear(e, h) -> ReLU -> BN(h) -> Linear(h, D)`` (ReLU and BN act on the raw label
    embedding first, as in the official code). ``fuse=True``: the pair's embedding is the mean ``(E[y] + E[p]) / 2``;
    ``fuse=False``: ``g = sigmoid(MLP(E[y])) * sigmoid(MLP(E[p]))``.

    Args:
        num_classes: ``C``; labels index the embedding table.
        embedding_dim: ``D``, the size of the gated embeddings.
        label_embedding_dim: ``e`` (paper: 512).
        hidden_dim: ``h`` (paper: 1024).
        fuse: fuse the pair before the MLP (paper default) or gate each class and multiply.
    """

    def __init__(
        self, num_classes: int, embedding_dim: int, label_embedding_dim: int = 512, hidden_dim: int = 1024, fuse=True
    ) -> None:
        super().__init__()
        self.num_classes, self.fuse = num_classes, fuse
        self.label_embedding = nn.Embedding(num_classes, label_embedding_dim)
        self.mlp = nn.Sequential(
            nn.ReLU(),
            nn.BatchNorm1d(label_embedding_dim),
            nn.Linear(label_embedding_dim, hidden_dim),
            nn.ReLU(),
            nn.BatchNorm1d(hidden_dim),
            nn.Linear(hidden_dim, embedding_dim),
        )

    def forward(self, labels: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
        """Gates [n, D] of the class pairs ``(labels[i], partners[i])`` ([n] each)."""
        if self.fuse:
            return self.mlp((self.label_embedding(labels) + self.label_embedding(partners)) / 2).sigmoid()
        return self.mlp(self.label_embedding(labels)).sigmoid() * self.mlp(self.label_embedding(partners)).sigmoid()

    @torch.no_grad()
    def statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(activation, entropy): ``mean_c sum_d g_{c,d}`` and the mean Bernoulli entropy of ``g(c, c)`` over classes,
        with BatchNorm in eval mode (running statistics)."""
        was_training = self.training
        self.eval()
        classes = torch.arange(self.num_classes, device=self.label_embedding.weight.device)
        gates = self(classes, classes).clamp(1e-6, 1 - 1e-6)
        self.train(was_training)
        entropy = -(gates * gates.log() + (1 - gates) * (1 - gates).log()).mean()
        return gates.sum(dim=1).mean(), entropy


def gated_cosine(queries: torch.Tensor, keys: torch.Tensor, gates: torch.Tensor | None) -> torch.Tensor:
    """``cos(q_i * g_i, k_j * g_i)`` [B, N] for queries [B, D], keys [N, D], gates [B, D] (None: plain cosine).

    Equals normalising ``q_i * g_i`` and every ``k_j * g_i`` (a [B, N, D] tensor) and taking dot products, in O(B * N)
    memory: ``<q g, k g> = (q g^2) . k`` and ``||k_j g_i||^2 = g_i^2 . k_j^2``. Norms are clamped at 1e-12 as in
    ``F.normalize``.
    """
    if gates is None:
        return F.normalize(queries, dim=-1) @ F.normalize(keys, dim=-1).T
    squared_gates = gates.pow(2)
    numerator = (queries * squared_gates) @ keys.T
    query_norms = (queries * gates).norm(dim=-1, keepdim=True).clamp_min(1e-12)
    key_norms = (squared_gates @ keys.pow(2).T).clamp_min(0).sqrt().clamp_min(1e-12)
    return numerator / (query_norms * key_norms)


def pair_masks(
    labels: torch.Tensor, partners: torch.Tensor, key_labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(positives ``P_ij = [y_j = p_i]``, excluded ``X_ij = P_ij or [y_j = y_i]``), both bool [B, N].

    labels, partners: [B] (the anchors' classes and partner classes); key_labels: [N] (the gathered keys' classes).
    """
    positives = key_labels[None, :] == partners[:, None]
    return positives, positives | (key_labels[None, :] == labels[:, None])


def multi_positive_loss_sum(
    logits: torch.Tensor, positives: torch.Tensor, excluded: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``sum_ij P_ij [log(exp(l_ij) + sum_m Neg_im exp(l_im)) - l_ij]`` and ``sum_ij P_ij``.

    logits [B, N]; positives, excluded [B, N] bool (``Neg = ~excluded``). Computed with log-sum-exp, so it needs no
    row centring (the reference code subtracts the row mean, which cancels exactly).
    """
    negatives_lse = logits.masked_fill(excluded, torch.finfo(logits.dtype).min).logsumexp(dim=1, keepdim=True)
    per_pair = torch.logaddexp(logits, negatives_lse) - logits
    return (per_pair * positives).sum(), positives.sum()


class HydraLoss(ResumableRandomState, ScaledSimilarity, ContrastiveObjective):
    """Hydra / SimLAP: class-pair positives in a pair-gated subspace; labels required (see the module docstring).

    Args:
        num_classes: number of classes ``C`` (labels in ``[0, C)``).
        embedding_dim: ``D``, the size of the embeddings (the gate's output size).
        view_columns: the two view columns (default ``x_view_1``, ``x_view_2``).
        pair_mode: ``"arbitrary"``, ``"identical"`` or ``"distinct"``.
        temperature: ``1 / s`` of the pair terms (SimLAP: 0.1; Hydra-MoCo learns ``s`` from 20).
        learnable_temperature, max_scale: learn ``log s`` (clamped at ``max_scale``).
        gate: ``"basic"`` (:class:`PairGate`) or ``"open"`` (all ones: the ungated limit).
        fuse, label_embedding_dim, gate_hidden_dim: the gate's options.
        momentum_keys: read the keys from ``f"{view}.key"`` (momentum encoder) instead of the other view.
        instance_weight: ``w`` of the instance InfoNCE; default 1 with momentum keys, 0 without (SimLAP).
        instance_temperature: ``T`` of the instance term (MoCo-v3: 0.2 for ViT, 1.0 for ResNet).
        beta, alpha: weights of the arbitrary-pair and the class (``p = y``) terms.
        filter_warmup_steps: training steps during which the pair terms train the gate only.
        seed: seed of the partner-sampling generator.
        gather_across_devices: take keys and labels from every rank.
    """

    name = "hydra"
    paper = "2410.18200"
    citation = HYDRA_CITATION
    random_state = ("generator",)

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        view_columns: tuple[str, str] | list[str] = ("x_view_1", "x_view_2"),
        pair_mode: str = "arbitrary",
        temperature: float = 0.1,
        learnable_temperature: bool = False,
        max_scale: float = 100.0,
        gate: str = "basic",
        fuse: bool = True,
        label_embedding_dim: int = 512,
        gate_hidden_dim: int = 1024,
        momentum_keys: bool = False,
        instance_weight: float | None = None,
        instance_temperature: float = 0.2,
        beta: float = 1.0,
        alpha: float = 0.0,
        filter_warmup_steps: int = 0,
        seed: int = 0,
        gather_across_devices: bool = True,
    ) -> None:
        super().__init__()
        if len(view_columns) != 2:
            raise ValueError(f"Hydra needs exactly 2 view columns, got {list(view_columns)}.")
        if pair_mode not in PAIR_MODES:
            raise ValueError(f"pair_mode must be one of {PAIR_MODES}, got {pair_mode!r}.")
        if gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {gate!r}.")
        if num_classes < 2 and pair_mode == "distinct":
            raise ValueError("pair_mode='distinct' needs at least 2 classes.")
        instance_weight = (1.0 if momentum_keys else 0.0) if instance_weight is None else instance_weight
        if min(instance_weight, beta, alpha) < 0 or instance_weight + beta + alpha == 0:
            raise ValueError(
                f"instance_weight, beta, alpha must be >= 0 with a positive sum, got "
                f"{instance_weight}, {beta}, {alpha}."
            )
        if instance_weight and not momentum_keys:
            raise ValueError("instance_weight > 0 is the Hydra-MoCo instance term: it needs momentum_keys=True.")
        if instance_temperature <= 0:
            raise ValueError(f"instance_temperature must be > 0, got {instance_temperature}.")
        self.init_similarity(temperature, learnable_temperature, max_scale, "cosine")
        self.num_classes, self.embedding_dim = num_classes, embedding_dim
        self.view_columns, self.pair_mode, self.momentum_keys = tuple(view_columns), pair_mode, momentum_keys
        # Keys of each query view are the *other* view's: (q1, k2) and (q2, k1).
        key_source = self.view_columns[::-1]
        self.key_columns = tuple(f"{c}.key" for c in key_source) if momentum_keys else key_source
        self.required_columns = self.view_columns + (tuple(sorted(self.key_columns)) if momentum_keys else ())
        self.instance_weight, self.instance_temperature = instance_weight, instance_temperature
        self.beta, self.alpha, self.filter_warmup_steps, self.seed = beta, alpha, filter_warmup_steps, seed
        self.gate_kind, self.fuse = gate, fuse
        self.gate = (
            PairGate(num_classes, embedding_dim, label_embedding_dim, gate_hidden_dim, fuse)
            if gate == "basic"
            else None
        )
        self.gather_across_devices = gather_across_devices
        self.generator = torch.Generator().manual_seed(seed)
        self.register_buffer("training_steps", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------------------------------------- forward
    def forward(self, embeddings: dict[str, torch.Tensor], batch: dict) -> ObjectiveOutput:
        """Local Hydra loss; ``batch["labels"]`` [B] holds the class of every row."""
        self.check_columns(tuple(embeddings))
        labels = self._labels(batch, embeddings[self.view_columns[0]])
        queries = [embeddings[c] for c in self.view_columns]
        # Momentum keys carry no gradient (the EMA encoder is not trained by backprop).
        keys = [embeddings[c].detach() if self.momentum_keys else embeddings[c] for c in self.key_columns]
        all_labels = self._gather_no_grad(labels)
        offset = self._local_offset(len(labels))
        local = slice(offset, offset + len(labels))
        gathered_keys = [self._gather(k) for k in keys]
        warming_up = torch.is_grad_enabled() and int(self.training_steps) < self.filter_warmup_steps
        # Filter warm-up: the pair terms see constant embeddings, so they train the gate only.
        pair_queries = [q.detach() for q in queries] if warming_up else queries
        pair_keys = [k.detach() for k in gathered_keys] if warming_up else gathered_keys

        terms, logs = [], {}
        if self.beta:
            partners = self.sample_partners(all_labels)
            loss = self._pair_loss(pair_queries, pair_keys, labels, all_labels, partners, local)
            terms.append(self.beta * loss)
            logs["pair_loss"] = loss.detach()
        if self.alpha:
            loss = self._pair_loss(pair_queries, pair_keys, labels, all_labels, all_labels, local)
            terms.append(self.alpha * loss)
            logs["class_loss"] = loss.detach()
        if self.instance_weight:
            loss = self._instance_loss(queries, gathered_keys, offset)
            terms.append(self.instance_weight * loss)
            logs["instance_loss"] = loss.detach()
        if torch.is_grad_enabled():
            self.training_steps += 1
        logs.update(self._gate_logs())
        total = torch.stack(terms).sum() / (self.instance_weight + self.beta + self.alpha)
        return ObjectiveOutput(loss=total, logs=logs)

    def _labels(self, batch: dict, reference: torch.Tensor) -> torch.Tensor:
        labels = batch.get("labels")
        if labels is None:
            raise ValueError(
                "Hydra needs class labels: set label_column (the column of class ids) so the collator adds "
                "batch['labels'] [B]."
            )
        labels = torch.as_tensor(labels, device=reference.device)
        if labels.shape != (reference.shape[0],) or labels.is_floating_point():
            raise ValueError(
                f"batch['labels'] must be [B] = [{reference.shape[0]}] class ids, got {tuple(labels.shape)} "
                f"{labels.dtype}."
            )
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(
                f"Labels must lie in [0, num_classes={self.num_classes}), got {labels.min()}..{labels.max()}."
            )
        return labels.long()

    def sample_partners(self, all_labels: torch.Tensor) -> torch.Tensor:
        """Partner classes [N] of the gathered batch, drawn from the shared generator (same on every rank)."""
        n = len(all_labels)
        if self.pair_mode == "identical":
            return all_labels
        if self.pair_mode == "arbitrary":
            return all_labels[torch.randperm(n, generator=self.generator).to(all_labels.device)]
        shift = torch.randint(1, self.num_classes, (n,), generator=self.generator).to(all_labels.device)
        return (all_labels + shift) % self.num_classes

    def _pair_loss(self, queries, gathered_keys, labels, all_labels, all_partners, local: slice) -> torch.Tensor:
        """``(L_pair(q1, k2) + L_pair(q2, k1)) / 2`` with one partner draw shared by both directions."""
        gates = self.gate(all_labels, all_partners)[local] if self.gate is not None else None
        positives, excluded = pair_masks(labels, all_partners[local], all_labels)
        total, count = 0.0, positives.sum()
        for query, keys in zip(queries, gathered_keys):
            logits = self.scale() * gated_cosine(query, keys, gates)
            total = total + multi_positive_loss_sum(logits, positives, excluded)[0]
        # The global mean over positives: divide by the positives per rank averaged over ranks, so that DDP's gradient
        # average of the local losses equals the gradient of the single-process loss.
        count = count.float()
        if self.gather_across_devices:
            count = distributed.all_reduce_sum(count) / distributed.world_size()
        return total / (2 * count.clamp_min(1))

    def _instance_loss(self, queries, gathered_keys, offset: int) -> torch.Tensor:
        """MoCo-v3's ``(CE(q1 k2^T / T) + CE(q2 k1^T / T)) / 2`` over normalised queries and gathered keys."""
        labels = torch.arange(offset, offset + len(queries[0]), device=queries[0].device)
        losses = [
            F.cross_entropy(gated_cosine(query, keys, None) / self.instance_temperature, labels)
            for query, keys in zip(queries, gathered_keys)
        ]
        return (losses[0] + losses[1]) / 2

    def _gate_logs(self) -> dict[str, torch.Tensor]:
        logs = {"temperature": torch.as_tensor(1.0 / self.scale(), dtype=torch.float32).detach()}
        if self.gate is not None:
            activation, entropy = self.gate.statistics()
            logs.update(gate_activation=activation, gate_entropy=entropy)
        return logs

    def gate_statistics(self) -> dict[str, float]:
        """The paper's gate logs: activation ``mean_c sum_d g_{c,d}`` (in [0, D]) and the mean Bernoulli entropy."""
        if self.gate is None:
            return {"gate_activation": float(self.embedding_dim), "gate_entropy": 0.0}
        activation, entropy = self.gate.statistics()
        return {"gate_activation": float(activation), "gate_entropy": float(entropy)}

    def effective_negatives(self, gathered_rows: int, negatives_per_row: int) -> int:
        """Keys of classes other than the anchor's and its partner's: at most every other gathered row."""
        return gathered_rows - 1

    def get_config_dict(self) -> dict:
        return {
            "num_classes": self.num_classes,
            "embedding_dim": self.embedding_dim,
            "view_columns": list(self.view_columns),
            "pair_mode": self.pair_mode,
            "temperature": self.temperature,
            "learnable_temperature": self.learnable_temperature,
            "gate": self.gate_kind,
            "fuse": self.fuse,
            "momentum_keys": self.momentum_keys,
            "instance_weight": self.instance_weight,
            "instance_temperature": self.instance_temperature,
            "beta": self.beta,
            "alpha": self.alpha,
            "filter_warmup_steps": self.filter_warmup_steps,
            "seed": self.seed,
            "gather_across_devices": self.gather_across_devices,
        }
