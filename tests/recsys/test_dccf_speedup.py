"""DCCF's sparse edge products: equal to the spec's dense formulas (outputs, loss, every gradient) and O(n·d + m).

The reference below is written from ``shared/papers/dccf.md`` §2 with dense [n, n] matrices in float64: the binary
adjacency A, ``Ĝ = D^-1/2 A D^-1/2``, the masks ``(cos + 1) / 2 ⊙ A`` row-normalised, the intent softmax, the sum
of layers and the four loss terms. The model (float32, CSR edge products) must match it to 1e-5 relative.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hf_contrastive.data.recsys import InteractionData, TripleSampler
from hf_contrastive.models.graph_rec import (
    DCCF,
    EdgeDot,
    EdgeWeightedSum,
    bipartite_edges,
    reverse_positions,
    sorted_by_head,
)
from hf_contrastive.objectives.dccf import DCCFLoss

from .graph_rec_worker import tiny_interactions

LOSS = {"temperature": 0.5, "emb_reg": 1e-2, "cen_reg": 1e-2, "ssl_reg": 0.5}  # every term visible in the gradient


def medium_interactions() -> InteractionData:
    """200 users x 300 items, ~3000 random pairs (fixed seed)."""
    pairs = {(f"u{u}", f"i{i}") for u, i in np.random.default_rng(0).integers(0, (200, 300), size=(3000, 2))}
    return InteractionData.from_pairs(sorted(pairs), test=[])


# ----------------------------------------------------------------------------------------------- the spec, dense
def spec_propagation(model: DCCF, ego: torch.Tensor, user_intents: torch.Tensor, item_intents: torch.Tensor):
    """``E*`` [n, d] and the per-layer views ``(Z, R, Hβ, Hγ)`` of spec §2, with dense [n, n] matrices."""
    num_users, n = model.config.num_users, ego.shape[0]
    adjacency = torch.zeros(n, n, dtype=ego.dtype)
    adjacency[model.graph_users, model.graph_items + num_users] = 1.0
    adjacency[model.graph_items + num_users, model.graph_users] = 1.0
    degree = adjacency.sum(1)
    inv_sqrt = torch.where(degree > 0, degree.pow(-0.5), 0.0)
    normalized = inv_sqrt[:, None] * adjacency * inv_sqrt[None, :]

    def masked(source: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        unit = F.normalize(source, dim=1)
        mask = (unit @ unit.T + 1) / 2 * adjacency
        row_sum = mask.sum(1, keepdim=True)
        return torch.where(row_sum > 0, mask / row_sum, 0.0) @ embeddings

    layers, views = [ego], []
    for _ in range(model.config.n_layers):
        e = layers[-1]
        z = normalized @ e
        e_users, e_items = e[:num_users], e[num_users:]
        r = torch.cat(
            [
                torch.softmax(e_users @ user_intents, dim=1) @ user_intents.T,
                torch.softmax(e_items @ item_intents, dim=1) @ item_intents.T,
            ]
        )
        h_beta, h_gamma = masked(z, e), masked(r, e)
        views.append((z, r, h_beta, h_gamma))
        layers.append(z + r + h_beta + h_gamma + e)
    return sum(layers), views


def spec_info_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """``(1/m) Σ_r -log(exp(â_r·b̂_r/τ) / (Σ_j exp(â_r·b̂_j/τ) + 1e-8) + 1e-8)``."""
    scores = (F.normalize(anchors, dim=1) @ F.normalize(positives, dim=1).T / temperature).exp()
    return -torch.log(scores.diagonal() / (scores.sum(1) + 1e-8) + 1e-8).mean()


def spec_loss_and_gradients(model: DCCF, batch: dict[str, torch.Tensor]):
    """``E*``, ``L`` and ``∂L/∂θ`` for every parameter, from float64 copies of the model's parameters."""
    parameters = {name: p.detach().double().requires_grad_() for name, p in model.named_parameters()}
    num_users = model.config.num_users
    ego = torch.cat([parameters["user_embedding.weight"], parameters["item_embedding.weight"]])
    final, views = spec_propagation(model, ego, parameters["user_intents"], parameters["item_intents"])
    users, positives, negatives = batch["user_id"], batch["item_id"], batch["neg_item_id"]
    user_rows = final[users]
    margin = (user_rows * final[num_users + positives]).sum(1) - (user_rows * final[num_users + negatives]).sum(1)
    bpr = F.softplus(-margin).mean()
    emb = LOSS["emb_reg"] * sum(
        ego[rows].pow(2).sum() for rows in (users, num_users + positives, num_users + negatives)
    )
    cen = LOSS["cen_reg"] * (parameters["user_intents"].pow(2).sum() + parameters["item_intents"].pow(2).sum())
    anchor_nodes = (torch.unique(users), num_users + torch.unique(positives))
    contrast = sum(
        spec_info_nce(z[nodes], view[nodes], LOSS["temperature"])
        for z, *others in views
        for view in others
        for nodes in anchor_nodes
    )
    loss = bpr + emb + cen + LOSS["ssl_reg"] * contrast
    gradients = dict(zip(parameters, torch.autograd.grad(loss, list(parameters.values()))))
    return final.detach(), loss.detach(), gradients


def assert_relatively_close(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """``max |actual - expected| <= 1e-5 · max |expected|`` (float32 against the float64 reference)."""
    error = (actual.double() - expected).abs().max().item()
    assert error <= 1e-5 * expected.abs().max().item(), f"{name}: max error {error:.3e}, scale {expected.abs().max()}"


# ----------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("make_data", [tiny_interactions, medium_interactions], ids=["tiny", "medium"])
def test_dccf_embeddings_loss_and_every_gradient_equal_the_dense_spec(make_data):
    data = make_data()
    torch.manual_seed(0)
    model = DCCF.from_data(data, embed_size=16, n_layers=2, n_intents=8)
    sampler = TripleSampler.from_data(data, mode="user", num_triples=64)
    batch = sampler.sample(torch.Generator().manual_seed(0))

    output = model()
    loss = DCCFLoss(**LOSS)(output, batch).loss
    loss.backward()
    expected_final, expected_loss, expected_gradients = spec_loss_and_gradients(model, batch)

    assert_relatively_close(torch.cat([output.user_embeddings, output.item_embeddings]), expected_final, "E*")
    assert_relatively_close(loss.detach(), expected_loss, "loss")
    for name, parameter in model.named_parameters():
        assert_relatively_close(parameter.grad, expected_gradients[name], f"d loss / d {name}")


def small_symmetric_edges() -> tuple[torch.Tensor, torch.Tensor, int]:
    """Sorted edges, reverse positions and n of a 5-user, 6-item graph with an isolated item node (n = 11)."""
    users, items = torch.tensor([0, 0, 1, 2, 2, 3, 4, 4, 4]), torch.tensor([0, 3, 1, 1, 4, 2, 0, 4, 3])
    edges = sorted_by_head(bipartite_edges(5, users, items), 11)
    return edges, reverse_positions(edges, 11), 11


def test_edge_products_have_exact_gradients():
    edges, reverse, n = small_symmetric_edges()
    assert torch.equal(edges[:, reverse], edges.flip(0))  # each edge's reverse
    generator = torch.Generator().manual_seed(0)
    x, y = (torch.randn(n, 3, dtype=torch.float64, generator=generator).requires_grad_() for _ in range(2))
    weights = torch.rand(edges.shape[1], dtype=torch.float64, generator=generator).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: EdgeDot.apply(a, b, edges, reverse), (x, y))
    assert torch.autograd.gradcheck(lambda w, e: EdgeWeightedSum.apply(w, e, edges, reverse), (weights, x))
    head, tail = edges
    torch.testing.assert_close(EdgeDot.apply(x, y, edges, reverse), (x[head] * y[tail]).sum(1))
    expected = torch.zeros_like(x).index_add(0, head, weights[:, None] * x[tail])
    torch.testing.assert_close(EdgeWeightedSum.apply(weights, x, edges, reverse), expected)


def test_dccf_graph_view_reads_the_adjacency_values_in_edge_order():
    model = DCCF.from_data(medium_interactions(), embed_size=4, n_intents=2)
    assert torch.equal(model.adjacency().indices(), model.edges())  # graph_view pairs Â's values with edges()


def test_dccf_backward_keeps_no_per_edge_embedding_tensor():
    """The cause of the 50x slowdown: autograd saved gathered [edges, d] rows; the edge products keep O(n·d + m)."""
    data = medium_interactions()
    model = DCCF.from_data(data, embed_size=16, n_layers=2, n_intents=8)
    num_edges = model.edges().shape[1]
    saved_shapes = []

    def record(tensor: torch.Tensor) -> torch.Tensor:
        saved_shapes.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(record, lambda tensor: tensor):
        output = model()
    assert output.layer_views is not None and saved_shapes
    assert not [shape for shape in saved_shapes if len(shape) == 2 and shape[0] == num_edges]
