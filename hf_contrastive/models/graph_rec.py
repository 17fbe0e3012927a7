"""Graph collaborative filtering: LightGCN, XSimGCL and DCCF as ``PreTrainedModel``s that carry their graph.

    data = InteractionData.from_dataset(interactions)              # columns user_id, item_id (raw ids)
    model = XSimGCL.from_data(data, n_layers=2, eps=0.2)
    trainer = GraphRecTrainer(model, GraphRecConfig(output_dir="out", objective="xsimgcl"))
    trainer.train()
    model.save_pretrained("out/model")
    items, scores = AutoModel.from_pretrained("out/model").recommend(["u42"], k=20)   # no training data needed

The training interactions are part of the model's state: the persistent int64 buffers ``graph_users`` /
``graph_items`` [nnz] (one row per unique (user, item) pair, sorted by user) are saved with the weights, and the
raw-id maps of :class:`~hf_contrastive.data.recsys.InteractionData` (``config.id_maps``) with the config. The normalised adjacency is rebuilt from the buffers on first use on each device.

Duplicate interactions collapse to one edge (both papers train on a binary graph; ``InteractionData`` already drops
them); an unknown raw id at inference raises ``KeyError`` naming it (``IdMap``) and out-of-range indices a
``ValueError``.

``forward`` runs ONE full-graph propagation and returns every view the objectives need
(:class:`GraphRecOutput`); the trainer computes all loss terms of a step from that single output, as the specs
require. Shapes: U users, I items, n = U + I nodes, d = ``embed_size``, L = ``n_layers``.

- :class:`LightGCN`: ``E^(k) = Â E^(k-1)``, ``Â = D^-1/2 A D^-1/2``; final = mean of ``E^(0..L)`` (He et al. 2020).
- :class:`XSimGCL`: the same recursion with noise ``Δ = sign(E) ⊙ normalize_rows(U[0,1)) · ε`` added to every
  layer (training only), final = mean of ``E^(1..L)`` (``E^(0)`` excluded), and the ``cl_layer``-th perturbed layer
  returned for the cross-layer contrast (arXiv:2209.02544, SELFRec).
- :class:`DCCF`: per layer the graph view ``Z = Â E``, the intent view ``R = softmax(E C) Cᵀ``, two adaptively masked
  views ``G^β E`` and ``G^γ E`` (edge weights ``(cos + 1) / 2`` of Z resp. R, row-normalised), summed with ``E``
  into the next layer; final = SUM of ``E^(0..L)`` (arXiv:2305.02759, HKUDS/DCCF). Its per-edge products (the
  cosines, the weighted sums and their gradients) are sparse CSR products over the cached edges (:class:`EdgeDot`,
  :class:`EdgeWeightedSum`): no [edges, d] tensor, time O(edges · d) per view.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from ..data.recsys import IdMap, InteractionData


# ----------------------------------------------------------------------------------------------- graph helpers
def unique_interactions(num_users: int, num_items: int, users: torch.Tensor, items: torch.Tensor):
    """Deduplicated ``(users, items)`` [nnz] int64, sorted by user then item; out-of-range indices raise.

    Duplicate pairs collapse to one edge: the graph is binary (A_ui ∈ {0, 1}).
    """
    users, items = torch.as_tensor(users, dtype=torch.long), torch.as_tensor(items, dtype=torch.long)
    if users.shape != items.shape or users.ndim != 1:
        raise ValueError(
            f"user and item indices must be two 1-d tensors of one length, got {users.shape}, {items.shape}."
        )
    for name, index, size in (("user", users, num_users), ("item", items, num_items)):
        if index.numel() and (index.min() < 0 or index.max() >= size):
            raise ValueError(f"{name} indices must lie in [0, {size}), got [{index.min()}, {index.max()}].")
    keys = torch.unique(users * num_items + items)  # sorted: by user, then item
    return keys // num_items, keys % num_items


def bipartite_edges(num_users: int, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Directed edges [2, 2·nnz] of the bipartite graph over n = U + I nodes: user→item rows, then item→user rows."""
    item_nodes = items + num_users
    return torch.stack([torch.cat([users, item_nodes]), torch.cat([item_nodes, users])])


def normalized_adjacency(
    num_users: int, num_items: int, user_ids: torch.Tensor, item_ids: torch.Tensor
) -> torch.Tensor:
    """Sparse ``Â = D^-1/2 A D^-1/2`` [n, n] (coalesced COO) of the user-item graph, ``A = [[0, R], [Rᵀ, 0]]``.

    ``Â_{u, U+i} = 1 / sqrt(deg(u) · deg(i))`` for every interaction (u, i); no self-loops; isolated nodes get an
    empty row. ``user_ids`` / ``item_ids`` [nnz] are contiguous indices; duplicate pairs count once.
    """
    users, items = unique_interactions(num_users, num_items, user_ids, item_ids)
    edges = bipartite_edges(num_users, users, items)
    n = num_users + num_items
    degree = torch.bincount(edges[0], minlength=n).to(torch.float32)
    inv_sqrt = degree.pow(-0.5).nan_to_num(posinf=0.0)
    values = inv_sqrt[edges[0]] * inv_sqrt[edges[1]]
    return torch.sparse_coo_tensor(edges, values, (n, n), check_invariants=False).coalesce()


def sorted_by_head(edges: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """``edges`` [2, m] reordered by head, then tail (CSR order: the layout the edge products below expect)."""
    return edges[:, torch.argsort(edges[0] * num_nodes + edges[1])]


def reverse_positions(edges: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """[m]: the position in ``edges`` [2, m] (sorted by head, then tail) of each edge's reverse (t, h).

    The edge set must be symmetric (every (h, t) has its (t, h)), as the bipartite graph's both directions are.
    """
    return torch.argsort(edges[1] * num_nodes + edges[0])


def edge_csr(edges: torch.Tensor, values: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Sparse CSR [n, n] with ``values`` [m] at ``edges`` [2, m] (sorted by head, then tail; no duplicates).

    O(n log m) to build (no sorting, no device sync), so it is rebuilt per call from the cached edges.
    """
    head, tail = edges
    row_pointers = torch.searchsorted(head, torch.arange(num_nodes + 1, device=head.device))
    with warnings.catch_warnings():  # PyTorch's "sparse CSR support is in beta": these few ops are tested here
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        return torch.sparse_csr_tensor(row_pointers, tail, values, (num_nodes, num_nodes), check_invariants=False)


def sampled_edge_dot(edges: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``⟨x_h, y_t⟩`` [m] for every edge (h, t) of ``edges`` [2, m] (sorted by head): a sampled product (SDDMM)."""
    pattern = edge_csr(edges, x.new_ones(edges.shape[1]), x.shape[0])
    return torch.sparse.sampled_addmm(pattern, x, y.T, beta=0.0).values()


class EdgeDot(torch.autograd.Function):
    """``⟨x_h, y_t⟩`` [m] on a symmetric edge set (SDDMM); its gradients are the sparse products ``G y``, ``Gᵀ x``.

    ``apply(x [n, d], y [n, d], edges [2, m] sorted by head, reverse [m] from reverse_positions)``; G [n, n] holds
    the incoming per-edge gradient. Time O(m·d), memory O(n·d + m): autograd through the gathers ``x[h]``, ``y[t]``
    ([m, d] copies and a scatter-add backward each) made a DCCF training step ~18x slower (ml-100k, CPU).
    """

    @staticmethod
    def forward(ctx, x, y, edges, reverse):
        ctx.save_for_backward(x, y, edges, reverse)
        return sampled_edge_dot(edges, x, y)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, y, edges, reverse = ctx.saved_tensors
        grad = grad.contiguous()  # it becomes CSR values: an expanded (stride-0) gradient must be materialised
        grad_x = edge_csr(edges, grad, x.shape[0]) @ y if ctx.needs_input_grad[0] else None
        grad_y = edge_csr(edges, grad[reverse], x.shape[0]) @ x if ctx.needs_input_grad[1] else None
        return grad_x, grad_y, None, None


class EdgeWeightedSum(torch.autograd.Function):
    """``S E`` [n, d] with the sparse ``S_{h,t} = w_e`` of a symmetric edge set; differentiable in ``w`` and ``E``.

    ``apply(weights [m], embeddings [n, d], edges [2, m] sorted by head, reverse [m])``. Backward: ``Sᵀ G`` (the
    weights at the reversed edges) and ``∂w_e = ⟨G_h, E_t⟩`` (a sampled product). Time O(m·d), memory O(n·d + m).
    """

    @staticmethod
    def forward(ctx, weights, embeddings, edges, reverse):
        ctx.save_for_backward(weights, embeddings, edges, reverse)
        return edge_csr(edges, weights, embeddings.shape[0]) @ embeddings

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        weights, embeddings, edges, reverse = ctx.saved_tensors
        grad = grad.contiguous()  # a sparse-product operand: an expanded (stride-0) gradient must be materialised
        grad_weights = sampled_edge_dot(edges, grad, embeddings) if ctx.needs_input_grad[0] else None
        grad_embeddings = (
            edge_csr(edges, weights[reverse], embeddings.shape[0]) @ grad if ctx.needs_input_grad[1] else None
        )
        return grad_weights, grad_embeddings, None, None


def edge_cosine(edges: torch.Tensor, source: torch.Tensor, reverse: torch.Tensor | None = None) -> torch.Tensor:
    """``cos(source_h, source_t)`` [m] for every edge (h, t) of a symmetric ``edges`` [2, m] sorted by head.

    ``reverse``: :func:`reverse_positions` of ``edges`` (computed when omitted; pass it cached in a loop).
    """
    reverse = reverse_positions(edges, source.shape[0]) if reverse is None else reverse
    unit = F.normalize(source, dim=1)
    return EdgeDot.apply(unit, unit, edges, reverse)


def row_normalized_propagation(
    edges: torch.Tensor, weights: torch.Tensor, embeddings: torch.Tensor, reverse: torch.Tensor | None = None
) -> torch.Tensor:
    """``D_w^-1 (W ⊙ A) E`` [n, d]: each node's weight-averaged neighbours; nodes whose weights sum to 0 get 0.

    ``edges`` [2, m] (head, tail): a symmetric edge set sorted by head, then tail (:func:`sorted_by_head`);
    ``weights`` [m] ≥ 0; ``embeddings`` [n, d]; ``reverse``: :func:`reverse_positions` of ``edges`` (computed when
    omitted). Differentiable in the weights and the embeddings (:class:`EdgeWeightedSum`: time O(m·d), memory
    O(n·d + m)).
    """
    head = edges[0]
    reverse = reverse_positions(edges, embeddings.shape[0]) if reverse is None else reverse
    weight_sum = torch.zeros(embeddings.shape[0], dtype=weights.dtype, device=weights.device).index_add(
        0, head, weights
    )
    inverse = weight_sum.pow(-1).nan_to_num(0.0, 0.0, 0.0)  # as HKUDS/DCCF: 1/0 -> 0
    return EdgeWeightedSum.apply(inverse[head] * weights, embeddings, edges, reverse)


# ----------------------------------------------------------------------------------------------- configs
class LightGCNConfig(PretrainedConfig):
    """Sizes, graph and id vocabularies of a LightGCN-family recommender.

    Args:
        num_users / num_items: U and I (set by ``from_data``).
        num_interactions: unique training pairs (length of the saved graph buffers).
        embed_size: d. n_layers: L propagation layers.
        include_ego_layer: average ``E^(0)`` into the final embedding (LightGCN: yes; XSimGCL: no).
        id_maps: ``{"user": IdMap.to_dict(), "item": ...}`` (``InteractionData.id_maps()``), saved so a reloaded
            model maps raw ids.
    """

    model_type = "lightgcn"

    def __init__(
        self,
        num_users: int = 0,
        num_items: int = 0,
        num_interactions: int = 0,
        embed_size: int = 64,
        n_layers: int = 2,
        include_ego_layer: bool = True,
        id_maps: dict | None = None,
        **kwargs,
    ) -> None:
        if embed_size < 1 or n_layers < 0:
            raise ValueError(f"embed_size must be >= 1 and n_layers >= 0, got {embed_size} and {n_layers}.")
        self.num_users = num_users
        self.num_items = num_items
        self.num_interactions = num_interactions
        self.embed_size = embed_size
        self.n_layers = n_layers
        self.include_ego_layer = include_ego_layer
        self.id_maps = id_maps
        super().__init__(**kwargs)


class XSimGCLConfig(LightGCNConfig):
    """LightGCN sizes plus XSimGCL's noise magnitude ``eps`` and contrast layer ``cl_layer`` (1-based, l*).

    Defaults are SELFRec's ``conf/XSimGCL.yaml``: d = 64, L = 2, l* = 1, ε = 0.2; ``E^(0)`` excluded from the mean.
    """

    model_type = "xsimgcl"

    def __init__(
        self, eps: float = 0.2, cl_layer: int = 1, include_ego_layer: bool = False, n_layers: int = 2, **kwargs
    ) -> None:
        if eps < 0:
            raise ValueError(f"eps (noise magnitude) must be >= 0, got {eps}.")
        if not 1 <= cl_layer <= n_layers:
            raise ValueError(f"cl_layer must lie in [1, n_layers={n_layers}], got {cl_layer}.")
        self.eps = eps
        self.cl_layer = cl_layer
        super().__init__(include_ego_layer=include_ego_layer, n_layers=n_layers, **kwargs)


class DCCFConfig(LightGCNConfig):
    """LightGCN sizes plus DCCF's number of intent prototypes ``n_intents`` (K). Defaults: d = 32, L = 2, K = 128."""

    model_type = "dccf"

    def __init__(self, n_intents: int = 128, embed_size: int = 32, **kwargs) -> None:
        if n_intents < 1:
            raise ValueError(f"n_intents must be >= 1, got {n_intents}.")
        self.n_intents = n_intents
        super().__init__(embed_size=embed_size, **kwargs)


# ----------------------------------------------------------------------------------------------- outputs
@dataclass
class GraphRecOutput(ModelOutput):
    """One propagation: final embeddings (scores are their dot products), ego embeddings and the contrast views.

    ``user_embeddings`` [U, d], ``item_embeddings`` [I, d]: final. ``ego_user_embeddings`` / ``ego_item_embeddings``:
    ``E^(0)``. XSimGCL: ``contrast_user_embeddings`` / ``contrast_item_embeddings`` (layer l*). DCCF: ``layer_views``,
    one ``(Z, R, Hβ, Hγ)`` tuple of [n, d] per layer, and the prototypes ``user_intents`` / ``item_intents`` [d, K].
    """

    user_embeddings: torch.Tensor | None = None
    item_embeddings: torch.Tensor | None = None
    ego_user_embeddings: torch.Tensor | None = None
    ego_item_embeddings: torch.Tensor | None = None
    contrast_user_embeddings: torch.Tensor | None = None
    contrast_item_embeddings: torch.Tensor | None = None
    layer_views: tuple[tuple[torch.Tensor, ...], ...] | None = None
    user_intents: torch.Tensor | None = None
    item_intents: torch.Tensor | None = None


# ----------------------------------------------------------------------------------------------- models
class LightGCN(PreTrainedModel):
    """LightGCN (He et al., SIGIR 2020): linear propagation over ``Â``, layer mean; the baseline of the family.

    Build with :meth:`from_data`; ``forward()`` propagates once; :meth:`recommend` ranks items for raw ids.
    """

    config_class = LightGCNConfig
    base_model_prefix = "graph_rec"
    main_input_name = "user"  # the batch column (token estimate of the Trainer)
    embedding_init = staticmethod(nn.init.xavier_uniform_)

    def __init__(self, config: LightGCNConfig) -> None:
        super().__init__(config)
        if config.num_users < 1 or config.num_items < 1:
            raise ValueError(
                f"{type(self).__name__} needs num_users and num_items >= 1, got {config.num_users} and "
                f"{config.num_items}; build it with {type(self).__name__}.from_data(InteractionData)."
            )
        self.user_embedding = nn.Embedding(config.num_users, config.embed_size)
        self.item_embedding = nn.Embedding(config.num_items, config.embed_size)
        self.register_buffer("graph_users", torch.zeros(config.num_interactions, dtype=torch.long))
        self.register_buffer("graph_items", torch.zeros(config.num_interactions, dtype=torch.long))
        self._graph_cache: dict[str, torch.Tensor] = {}
        self.embedding_init(self.user_embedding.weight)
        self.embedding_init(self.item_embedding.weight)
        self.build_extra_parameters(config)
        self.post_init()

    def build_extra_parameters(self, config: LightGCNConfig) -> None:
        """Parameters a subclass adds before ``post_init`` (LightGCN: none)."""

    def _init_weights(self, module: nn.Module) -> None:
        """Initialised in ``__init__`` (Xavier, as the reference code); nothing to redo here."""

    # ------------------------------------------------------------------------------------------- construction
    @classmethod
    def from_data(cls, data: InteractionData, **config_kwargs) -> LightGCN:
        """A freshly initialised model whose graph is ``data.train`` and whose config keeps ``data``'s id maps.

        ``config_kwargs`` go to the config (``embed_size``, ``n_layers``, ``eps``, ...).
        """
        config = cls.config_class(
            num_users=data.num_users,
            num_items=data.num_items,
            num_interactions=len(data.train),
            id_maps=data.id_maps(),
            **config_kwargs,
        )
        model = cls(config)
        users, items = unique_interactions(data.num_users, data.num_items, data.train[:, 0], data.train[:, 1])
        if len(users) != len(data.train):
            raise ValueError(f"data.train holds {len(data.train) - len(users)} duplicate (user, item) pairs.")
        model.graph_users.copy_(users)
        model.graph_items.copy_(items)
        return model

    # ------------------------------------------------------------------------------------------- graph state
    def _cached(self, name: str, build) -> torch.Tensor:
        """A graph tensor built once per device from the buffers (rebuilt when the model moves)."""
        device = self.graph_users.device
        cached = self._graph_cache.get(name)
        if cached is None or cached.device != device:
            cached = self._graph_cache[name] = build().to(device)
        return cached

    def adjacency(self) -> torch.Tensor:
        """``Â`` [n, n], sparse, on the model's device."""
        config = self.config
        return self._cached(
            "adjacency",
            lambda: normalized_adjacency(config.num_users, config.num_items, self.graph_users, self.graph_items),
        )

    def edges(self) -> torch.Tensor:
        """Directed edges [2, 2·nnz] (both directions) over the n nodes, sorted by head, then tail (CSR order)."""
        config = self.config
        return self._cached(
            "edges",
            lambda: sorted_by_head(
                bipartite_edges(config.num_users, self.graph_users, self.graph_items),
                config.num_users + config.num_items,
            ),
        )

    def reverse_edges(self) -> torch.Tensor:
        """[2·nnz]: the position in :meth:`edges` of each edge's reverse (the transpose of an edge-valued matrix)."""
        config = self.config
        return self._cached(
            "reverse_edges", lambda: reverse_positions(self.edges(), config.num_users + config.num_items)
        )

    def seen_mask(self, users: torch.Tensor) -> torch.Tensor:
        """[b, I] bool: True at the training items of each user index in ``users`` [b] (vectorised CSR lookup)."""
        row_starts = self._cached(
            "row_starts",
            lambda: F.pad(torch.bincount(self.graph_users, minlength=self.config.num_users).cumsum(0), (1, 0)),
        )
        starts, counts = row_starts[users], row_starts[users + 1] - row_starts[users]
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), counts)
        first_of_row = torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        positions = (
            torch.repeat_interleave(starts, counts) + torch.arange(len(rows), device=users.device) - first_of_row
        )
        mask = torch.zeros(len(users), self.config.num_items, dtype=torch.bool, device=users.device)
        mask[rows, self.graph_items[positions]] = True
        return mask

    # ------------------------------------------------------------------------------------------- propagation
    def ego_embeddings(self) -> torch.Tensor:
        """``E^(0) = [E_u; E_i]`` [n, d]."""
        return torch.cat([self.user_embedding.weight, self.item_embedding.weight])

    def propagate_layers(self, perturbed: bool) -> tuple[list[torch.Tensor], GraphRecOutput]:
        """``[E^(0), ..., E^(L)]`` and the extra views of the subclass (none for LightGCN)."""
        adjacency, layers = self.adjacency(), [self.ego_embeddings()]
        for _ in range(self.config.n_layers):
            layers.append(torch.sparse.mm(adjacency, layers[-1]))
        return layers, GraphRecOutput()

    def combine_layers(self, layers: list[torch.Tensor]) -> torch.Tensor:
        """Final [n, d]: the mean of the layers, ``E^(0)`` included only when ``config.include_ego_layer``."""
        kept = layers if self.config.include_ego_layer or len(layers) == 1 else layers[1:]
        return torch.stack(kept).mean(dim=0)

    def forward(self, perturbed: bool | None = None) -> GraphRecOutput:
        """One full-graph propagation (all n nodes); ``perturbed`` (XSimGCL noise) defaults to ``self.training``.

        The objective indexes the output with the batch's (user, pos_item, neg_item) rows.
        """
        perturbed = self.training if perturbed is None else perturbed
        layers, output = self.propagate_layers(perturbed)
        final = self.combine_layers(layers)
        output.user_embeddings, output.item_embeddings = final.split([self.config.num_users, self.config.num_items])
        output.ego_user_embeddings, output.ego_item_embeddings = self.user_embedding.weight, self.item_embedding.weight
        return output

    # ------------------------------------------------------------------------------------------- inference
    def id_map(self, side: str) -> IdMap:
        """The raw-id map of ``side`` ("user" or "item") saved in the config."""
        if self.config.id_maps is None:
            raise ValueError("This model has no id maps (config.id_maps); build it with from_data(InteractionData).")
        return IdMap.from_dict(self.config.id_maps[side])

    @torch.no_grad()
    def scores(self, users: torch.Tensor, exclude_seen: bool = True) -> torch.Tensor:
        """Scores [b, I] of every item for user indices ``users`` [b] from the clean propagation (no noise).

        ``exclude_seen``: training items get ``-inf`` (full-ranking evaluation masks them).
        """
        output = self(perturbed=False)
        scores = output.user_embeddings[users] @ output.item_embeddings.T
        return scores.masked_fill(self.seen_mask(users), float("-inf")) if exclude_seen else scores

    def recommend(
        self, user_ids: Sequence[Hashable], k: int = 10, exclude_seen: bool = True
    ) -> tuple[list[list[Hashable]], torch.Tensor]:
        """Top-``k`` raw item ids per raw user id and their scores [b, k], best first (training items excluded)."""
        if k < 1 or k > self.config.num_items:
            raise ValueError(f"k must lie in [1, num_items={self.config.num_items}], got {k}.")
        users = self.id_map("user").encode(user_ids).to(self.device)  # KeyError naming an unknown id
        top = self.scores(users, exclude_seen).topk(k, dim=1)
        item_map = self.id_map("item")
        return [item_map.decode(row) for row in top.indices], top.values


class XSimGCL(LightGCN):
    """XSimGCL (arXiv:2209.02544): noise-perturbed propagation, one pass for BPR and the cross-layer contrast.

    Training pass (``perturbed=True``): ``E^(k) = Â E^(k-1) + sign(Â E^(k-1)) ⊙ normalize_rows(U^(k)) · ε`` with
    ``U^(k) ~ Uniform[0, 1)^{n×d}`` fresh per layer and step (torch RNG: the trainer's seed reproduces it). Every
    row of Δ has L2 norm ε where it has no zero entry, and Δ has the sign of the layer. Final = mean of
    ``E^(1..L)``; the contrast view is ``E^(l*)``.
    """

    config_class = XSimGCLConfig

    def perturb(self, layer: torch.Tensor) -> torch.Tensor:
        """``layer + sign(layer) ⊙ normalize_rows(rand_like(layer)) · ε`` [n, d] (``sign`` has zero gradient)."""
        return layer + torch.sign(layer) * F.normalize(torch.rand_like(layer), dim=-1) * self.config.eps

    def propagate_layers(self, perturbed: bool) -> tuple[list[torch.Tensor], GraphRecOutput]:
        adjacency, layers = self.adjacency(), [self.ego_embeddings()]
        for _ in range(self.config.n_layers):
            layer = torch.sparse.mm(adjacency, layers[-1])
            layers.append(self.perturb(layer) if perturbed else layer)
        contrast_users, contrast_items = layers[self.config.cl_layer].split(
            [self.config.num_users, self.config.num_items]
        )
        return layers, GraphRecOutput(contrast_user_embeddings=contrast_users, contrast_item_embeddings=contrast_items)


class DCCF(LightGCN):
    """DCCF (arXiv:2305.02759): intent-disentangled, adaptively masked propagation; final = sum of all layers.

    Per layer l with input E (n×d): ``Z = Â E``; ``R = [softmax(E_u C_u) C_uᵀ; softmax(E_i C_i) C_iᵀ]`` (softmax
    over K intents); edge weights ``β_e = (cos(Z_h, Z_t) + 1) / 2``, ``γ_e = (cos(R_h, R_t) + 1) / 2`` on the
    directed edges (h, t); ``Hβ = D_β^-1 (β ⊙ A) E``, ``Hγ = D_γ^-1 (γ ⊙ A) E`` (row-normalised, masks not detached);
    ``E' = Z + R + Hβ + Hγ + E``. Prototypes ``C_u, C_i`` [d, K] and embeddings are Xavier-normal initialised.
    """

    config_class = DCCFConfig
    embedding_init = staticmethod(nn.init.xavier_normal_)

    def build_extra_parameters(self, config: DCCFConfig) -> None:
        """The intent prototypes ``C_u, C_i`` [d, K]."""
        self.user_intents = nn.Parameter(nn.init.xavier_normal_(torch.empty(config.embed_size, config.n_intents)))
        self.item_intents = nn.Parameter(nn.init.xavier_normal_(torch.empty(config.embed_size, config.n_intents)))

    def combine_layers(self, layers: list[torch.Tensor]) -> torch.Tensor:
        """Final [n, d]: ``E* = Σ_{l=0..L} E^(l)`` (a sum, ``E^(0)`` included)."""
        return torch.stack(layers).sum(dim=0)

    def intent_view(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``R`` [n, d]: each node's softmax mixture of its side's K intent prototypes."""
        users, items = embeddings.split([self.config.num_users, self.config.num_items])
        mix = [torch.softmax(x @ c, dim=1) @ c.T for x, c in ((users, self.user_intents), (items, self.item_intents))]
        return torch.cat(mix)

    def graph_view(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``Z = Â E`` [n, d] as an edge product: its backward is one CSR product (a COO ``sparse.mm`` re-sorts Âᵀ)."""
        # The coalesced Â lists its values by (row, column): the order of self.edges().
        return EdgeWeightedSum.apply(self.adjacency().values(), embeddings, self.edges(), self.reverse_edges())

    def masked_view(self, mask_source: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """``D^-1 (M ⊙ A) E`` [n, d] with ``M_e = (cos(src_h, src_t) + 1) / 2`` on every directed edge."""
        edges, reverse = self.edges(), self.reverse_edges()
        weights = (edge_cosine(edges, mask_source, reverse) + 1) / 2
        return row_normalized_propagation(edges, weights, embeddings, reverse)

    def propagate_layers(self, perturbed: bool) -> tuple[list[torch.Tensor], GraphRecOutput]:
        layers, views = [self.ego_embeddings()], []
        for _ in range(self.config.n_layers):
            embeddings = layers[-1]
            graph = self.graph_view(embeddings)
            intent = self.intent_view(embeddings)
            graph_masked, intent_masked = self.masked_view(graph, embeddings), self.masked_view(intent, embeddings)
            views.append((graph, intent, graph_masked, intent_masked))
            layers.append(graph + intent + graph_masked + intent_masked + embeddings)
        output = GraphRecOutput(
            layer_views=tuple(views), user_intents=self.user_intents, item_intents=self.item_intents
        )
        return layers, output
