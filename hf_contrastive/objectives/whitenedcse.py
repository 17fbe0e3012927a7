"""WhitenedCSE (Zhuo et al., ACL 2023): contrastive learning through a shuffled group whitening head.

Each sentence is encoded ``P`` times with dropout (``text_views=P``: columns ``anchor, positive, positive_2, ...``).
Every view's embedding matrix ``R^{(p)}`` [M, D] (the gathered batch, see *Distributed*) goes through a training-only
head: shuffled group whitening (SGW), then a dense layer and ``tanh`` (the official order):

.. math::

    z^{(p)} = \\tanh\\big(\\mathrm{SGW}_{\\pi_p}(R^{(p)})\\, W_d^\\top + b_d\\big), \\qquad
    L = \\sum_{p=2}^{P} \\frac{1}{B} \\sum_{i} -\\log
        \\frac{\\exp(\\cos(z^{(1)}_i, z^{(p)}_i) / \\tau)}{\\sum_{j=1}^{M} \\exp(\\cos(z^{(1)}_i, z^{(p)}_j) / \\tau)}

SGW with a channel permutation ``pi`` and ``G`` groups of ``d = D / G`` channels: ``X_g`` [M, d] is group ``g`` of
``R[:, pi]``, ``Xc_g = X_g - mean_rows(X_g)``, ``Sigma_g = Xc_g^T Xc_g / M = U diag(lambda) U^T`` and
``SGW(R) = [Xc_1 W_1 | ... | Xc_G W_G][:, argsort(pi)]`` with the ZCA matrix ``W_g = U diag(lambda + eps)^{-1/2} U^T``,
which is *detached* (a constant for autograd, as the official code rebuilds the covariance as a fresh tensor): the
gradient flows through the centering and the product only. Every view draws its own permutation, so the same
sentence is distorted differently in each view: more diverse positives. The positives are *summed* over views (not
averaged); view 1 is the anchor of every term, the negatives of anchor ``i`` are the same view's other rows, and
the positive views are not contrasted with each other. ``P = 2`` with SGW replaced by the identity is SimCSE.

Inference: the head is part of this objective, never of the encoder, so the saved model is the unwhitened
encoder and ``encode()`` returns the pooled embedding without SGW or the dense layer (the paper's ``mlp_only_train``).

Distributed: each view is gathered first (``gather_with_grad``) and whitened over the *gathered* batch of ``M = W * B``
rows, so 2 processes x B equal 1 process x 2B exactly (tested). The official code whitens per replica (DataParallel);
that depends on the number of devices, so it is not offered. Every rank computes the whitening and the head on all
``M`` rows and keeps its own anchors (rows ``rank * B .. rank * B + B - 1``) for a local loss. The permutations come
from a generator seeded with ``(seed, step)``, where ``step`` counts this objective's calls (saved in its state dict
for resuming): identical on every rank and independent of the global RNG that dropout consumes.

Shapes: every column [B, D]; gathered view [M, D]; whitening matrices [G, d, d]; logits [B, M] per positive view.
Cost per view: O(M * D * d) for the whitening, O(G * d^3) for the eigendecompositions (float64), O(M * D^2) for
the dense layer, O(B * M * D) for the logits.

Deviations and reconstructed parts (the paper text was not available; see the spec): ``eps`` is added to the
eigenvalues (the official code has none); views are whitened separately (the official code's row split mixes the
views of a third of the sentences in each chunk, a bug); duplicated inputs can be masked as false negatives
(``mask_false_negatives``; the official code has no mask, which is the same when a batch has no duplicates); the
dense layer is initialised like BERT's (normal, std 0.02, zero bias), from its own generator so every rank agrees.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from .base import ContrastiveObjective, ObjectiveOutput, ResumableRandomState
from .info_nce import false_negative_mask

WHITENEDCSE_CITATION = """@inproceedings{zhuo2023whitenedcse,
  title = {{WhitenedCSE}: Whitening-based Contrastive Learning of Sentence Embeddings},
  author = {Zhuo, Wenjie and Sun, Yifan and Wang, Xiaohan and Zhu, Linchao and Yang, Yi},
  booktitle = {Proceedings of the 61st Annual Meeting of the Association for Computational Linguistics},
  year = {2023},
  url = {https://aclanthology.org/2023.acl-long.677}
}"""

_POSITIVE_VIEW = re.compile(r"positive(_\d+)?")
HEAD_INIT_STD = 0.02  # BERT's initializer_range, which SimCSE's MLP head (cls_init) is initialised with


class ShuffledGroupWhitening(nn.Module):
    """Whiten [N, D] embeddings over the batch in ``num_groups`` groups of channels, after an optional shuffle.

    ``forward(x, permutation)``: ``x`` [N, D] with ``D % num_groups == 0`` and ``N > D / num_groups``;
    ``permutation`` [D] (a ``torch.randperm``) or ``None`` for the channel order as is. Returns [N, D] whose every
    group (in permuted order) has zero mean and covariance ``diag(lambda / (lambda + eps))``, i.e. identity up to
    ``eps``, with the channels back in their original order. No parameters; the whitening matrices are constants
    for autograd. Computed in float32 at least (autocast off); the d x d eigenproblems in float64.

    Limiting cases: ``num_groups = D`` standardises every channel, ``(x - mean) / std`` (biased std, plus ``eps``);
    ``num_groups = 1`` is full ZCA whitening, on which the permutation has no effect.

    Args:
        num_groups: number of channel groups ``G`` (official: 128).
        eps: added to the covariance eigenvalues before ``lambda^{-1/2}`` (not in the official code; 0 allowed).
    """

    def __init__(self, num_groups: int, eps: float = 1e-5) -> None:
        super().__init__()
        if num_groups < 1:
            raise ValueError(f"num_groups must be >= 1, got {num_groups}.")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}.")
        self.num_groups = num_groups
        self.eps = eps

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError when the groups do not tile the dimension or the batch is too small to whiten."""
        if x.dim() != 2:
            raise ValueError(f"ShuffledGroupWhitening expects [N, D] embeddings, got shape {tuple(x.shape)}.")
        rows, dim = x.shape
        if dim % self.num_groups:
            raise ValueError(
                f"num_groups={self.num_groups} does not divide the embedding dimension {dim}: choose a divisor of "
                f"{dim} (group size = dimension / num_groups)."
            )
        group_size = dim // self.num_groups
        if rows <= group_size:
            raise ValueError(
                f"Whitening groups of {group_size} channels needs more than {group_size} rows, but the batch has "
                f"{rows}: the group covariance would be singular. Raise the (global) batch size or num_groups."
            )

    def centered_groups(self, x: torch.Tensor, permutation: torch.Tensor | None) -> torch.Tensor:
        """Permute the channels, split them into groups and center over rows: [N, D] -> [N, G, d]."""
        if permutation is not None:
            x = x[:, permutation]
        grouped = x.reshape(x.shape[0], self.num_groups, -1)
        return grouped - grouped.mean(dim=0, keepdim=True)

    @torch.no_grad()
    def whitening_matrices(self, centered: torch.Tensor) -> torch.Tensor:
        """ZCA matrices ``U diag(lambda + eps)^{-1/2} U^T`` [G, d, d] of centered groups [N, G, d] (no gradient)."""
        centered64 = centered.double()
        covariance = torch.einsum("ngi,ngj->gij", centered64, centered64) / centered.shape[0]
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        inverse_sqrt = (eigenvalues.clamp_min(0) + self.eps).rsqrt()
        return ((eigenvectors * inverse_sqrt.unsqueeze(-2)) @ eigenvectors.transpose(-1, -2)).to(centered.dtype)

    def whiten(self, x: torch.Tensor, matrices: torch.Tensor, permutation: torch.Tensor | None) -> torch.Tensor:
        """Apply given whitening ``matrices`` [G, d, d] to ``x`` [N, D] (differentiable in ``x`` only)."""
        whitened = torch.einsum("ngi,gij->ngj", self.centered_groups(x, permutation), matrices).reshape(x.shape)
        return whitened if permutation is None else whitened[:, torch.argsort(permutation)]

    def forward(self, x: torch.Tensor, permutation: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float() if x.element_size() < 4 else x
            matrices = self.whitening_matrices(self.centered_groups(x.detach(), permutation))
            return self.whiten(x, matrices, permutation)

    def extra_repr(self) -> str:
        return f"num_groups={self.num_groups}, eps={self.eps}"


def multi_positive_info_nce(
    anchors: torch.Tensor,
    positive_views: list[torch.Tensor],
    labels: torch.Tensor,
    scale: float,
    masks: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over positive views of the cosine InfoNCE of local ``anchors`` [B, D] against each view [M, D].

    ``L = sum_p CE(cos(anchors, view_p) * scale, labels)``, CE averaged over the ``B`` anchors; ``labels`` [B] index
    each anchor's own row in a view; ``masks`` (one bool [B, M] per view) drop false negatives. Returns the loss and
    the top-1 accuracy averaged over views.
    """
    anchors = F.normalize(anchors, dim=-1)
    loss, hits = anchors.new_zeros(()), anchors.new_zeros(())
    for index, view in enumerate(positive_views):
        logits = (anchors @ F.normalize(view, dim=-1).T) * scale
        if masks is not None:
            logits = logits.masked_fill(masks[index], torch.finfo(logits.dtype).min)
        loss = loss + F.cross_entropy(logits.float() if logits.element_size() < 4 else logits, labels)
        hits = hits + (logits.argmax(dim=1) == labels).float().mean()
    return loss, hits / len(positive_views)


class WhitenedCSE(ResumableRandomState, ContrastiveObjective):
    """WhitenedCSE loss: InfoNCE of the anchor view against every positive view through a shuffled-whitening head.

    Columns: ``anchor``, ``positive`` and optionally ``positive_2 .. positive_{P-1}`` (``text`` data with
    ``text_views=P``; the paper uses ``P = 3``). Hard-negative columns are refused: the method has none.

    Args:
        embedding_dim: ``D``, the encoder's embedding size; required for the dense head (``projection_head``).
        num_groups: SGW groups ``G`` (official: 128, hard-coded; ``D % G == 0`` and the gathered batch > ``D / G``).
        shuffle: draw a new channel permutation per view and step (``False``: fixed channel order).
        eps: added to the covariance eigenvalues (a deviation for numerical safety; 0 reproduces the code).
        projection_head: apply ``tanh(Dense(.))`` after SGW, as the official head; ``False`` scores SGW outputs.
        temperature: ``tau`` (0.05).
        mask_false_negatives: drop in-batch candidates whose input text repeats the anchor's (by input hash).
        gather_across_devices: gather views from every rank before whitening (whitening and negatives over the
            global batch); ``False`` whitens and contrasts the local batch only.
        seed: seeds the permutations (with the step counter) and the head's initialisation.
    """

    name = "whitenedcse"
    paper = "2305.17746"
    citation = WHITENEDCSE_CITATION
    required_columns = ("anchor", "positive")
    optional_column_prefix = "positive_"
    random_state = ("steps",)

    def __init__(
        self,
        embedding_dim: int | None = None,
        num_groups: int = 128,
        shuffle: bool = True,
        eps: float = 1e-5,
        projection_head: bool = True,
        temperature: float = 0.05,
        mask_false_negatives: bool = True,
        gather_across_devices: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if projection_head and embedding_dim is None:
            raise ValueError(
                "WhitenedCSE's dense head needs embedding_dim (the encoder's embedding size, e.g. 384 for MiniLM): "
                "set objective_options.embedding_dim, or projection_head=False to score the whitened embeddings."
            )
        self.whitening = ShuffledGroupWhitening(num_groups, eps)
        if embedding_dim is not None and embedding_dim % num_groups:
            raise ValueError(f"num_groups={num_groups} does not divide embedding_dim={embedding_dim}.")
        self.embedding_dim = embedding_dim
        self.shuffle = shuffle
        self.projection_head = projection_head
        self.temperature = temperature
        self.mask_false_negatives = mask_false_negatives
        self.gather_across_devices = gather_across_devices
        self.seed = seed
        self.steps = 0
        self.head = self._dense_head(embedding_dim, seed) if projection_head else None

    @staticmethod
    def _dense_head(dim: int, seed: int) -> nn.Linear:
        """``Linear(D, D)``, weights ~ N(0, 0.02^2), zero bias, from a seeded generator (equal on every rank)."""
        head = nn.Linear(dim, dim)
        nn.init.normal_(head.weight, std=HEAD_INIT_STD, generator=torch.Generator().manual_seed(seed))
        nn.init.zeros_(head.bias)
        return head

    def view_columns(self, column_names: tuple[str, ...]) -> list[str]:
        """The views in batch order (``anchor`` first); a ValueError names any other column."""
        self.check_columns(column_names)
        others = [name for name in column_names if name != "anchor" and not _POSITIVE_VIEW.fullmatch(name)]
        if others:
            raise ValueError(
                f"WhitenedCSE contrasts the views anchor, positive, positive_2, ... and uses no other column, but "
                f"the batch has {others}. Train on a `text` column with text_views >= 2, or on (anchor, positive)."
            )
        return ["anchor", *(name for name in column_names if name != "anchor")]

    def permutations(self, dim: int, count: int, device: torch.device) -> list[torch.Tensor | None]:
        """``count`` channel permutations [D] for this step, from a generator seeded with ``(seed, step)``."""
        if not self.shuffle:
            return [None] * count
        generator = torch.Generator().manual_seed((self.seed * 2**32 + self.steps) % 2**64)
        return [torch.randperm(dim, generator=generator).to(device) for _ in range(count)]

    def project(self, view: torch.Tensor, permutation: torch.Tensor | None) -> torch.Tensor:
        """The training head on one (gathered) view [M, D] -> [M, D]: ``tanh(Dense(SGW(view)))``."""
        whitened = self.whitening(view, permutation)
        if self.head is None:
            return whitened
        with torch.autocast(device_type=view.device.type, enabled=False):
            return torch.tanh(self.head(whitened))

    def forward(self, embeddings: dict[str, torch.Tensor], batch: dict) -> ObjectiveOutput:
        """Local WhitenedCSE loss; ``batch["input_hashes"]`` [C, B] aligned with ``batch["column_names"]``."""
        column_names = tuple(batch["column_names"])
        views = self.view_columns(column_names)
        local_batch, dim = embeddings["anchor"].shape
        if self.embedding_dim is not None and dim != self.embedding_dim:
            raise ValueError(f"WhitenedCSE was built for embedding_dim={self.embedding_dim} but got {dim}.")
        permutations = self.permutations(dim, len(views), embeddings["anchor"].device)
        self.steps += 1
        projected = [self.project(self._gather(embeddings[name]), perm) for name, perm in zip(views, permutations)]

        offset = self._local_offset(local_batch)
        labels = torch.arange(offset, offset + local_batch, device=projected[0].device)
        masks = self._masks(batch, column_names, views, labels) if self.mask_false_negatives else None
        loss, hits = multi_positive_info_nce(
            projected[0][offset : offset + local_batch], projected[1:], labels, 1.0 / self.temperature, masks
        )
        return ObjectiveOutput(loss=loss, logs={"accuracy": hits.detach()})

    def _masks(
        self, batch: dict, column_names: tuple[str, ...], views: list[str], labels: torch.Tensor
    ) -> list[torch.Tensor]:
        """Per positive view, bool [B, M]: candidates whose input repeats the anchor's or the positive's."""
        by_role = dict(zip(column_names, batch["input_hashes"].to(labels.device)))
        gather = self._gather_no_grad
        return [
            false_negative_mask(by_role["anchor"], by_role[name], gather(by_role[name]), labels) for name in views[1:]
        ]

    def get_config_dict(self) -> dict:
        return {
            "embedding_dim": self.embedding_dim,
            "num_groups": self.whitening.num_groups,
            "shuffle": self.shuffle,
            "eps": self.whitening.eps,
            "projection_head": self.projection_head,
            "temperature": self.temperature,
            "mask_false_negatives": self.mask_false_negatives,
            "gather_across_devices": self.gather_across_devices,
            "seed": self.seed,
        }
