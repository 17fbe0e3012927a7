"""LightGCN / XSimGCL / DCCF: the normalised graph, propagation vs dense algebra, noise rule, save/reload."""

import math

import pytest
import torch
from transformers import AutoConfig, AutoModel

from hf_contrastive.data.recsys import InteractionData
from hf_contrastive.models.graph_rec import (
    DCCF,
    DCCFConfig,
    LightGCN,
    LightGCNConfig,
    XSimGCL,
    XSimGCLConfig,
    normalized_adjacency,
    row_normalized_propagation,
)

from .graph_rec_worker import tiny_interactions


@pytest.fixture(autouse=True)
def registered():
    """AutoModel resolves the model types (the package registers them once the lead adds them to MODEL_CLASSES)."""
    for config_class, model_class in ((LightGCNConfig, LightGCN), (XSimGCLConfig, XSimGCL), (DCCFConfig, DCCF)):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)


def three_user_graph() -> tuple[torch.Tensor, torch.Tensor]:
    """u0-{i0, i1}, u1-{i1}, u2-{i1, i2}, with u0-i0 repeated (a duplicate counts once)."""
    return torch.tensor([0, 0, 0, 1, 2, 2]), torch.tensor([0, 1, 0, 1, 1, 2])


def dense_adjacency(num_users: int, num_items: int, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    a = torch.zeros(num_users + num_items, num_users + num_items)
    a[users, items + num_users] = 1.0
    a[items + num_users, users] = 1.0
    degree = a.sum(1)
    inv = torch.where(degree > 0, degree.pow(-0.5), torch.zeros_like(degree))
    return inv[:, None] * a * inv[None, :]


def test_normalized_adjacency_matches_the_hand_built_three_user_graph():
    adjacency = normalized_adjacency(3, 3, *three_user_graph()).to_dense()
    # degrees: u0 2, u1 1, u2 2; i0 1, i1 3, i2 1 (nodes: u0 u1 u2 i0 i1 i2)
    expected = torch.zeros(6, 6)
    for user, item, value in [
        (0, 0, 1 / math.sqrt(2 * 1)),
        (0, 1, 1 / math.sqrt(2 * 3)),
        (1, 1, 1 / math.sqrt(1 * 3)),
        (2, 1, 1 / math.sqrt(2 * 3)),
        (2, 2, 1 / math.sqrt(2 * 1)),
    ]:
        expected[user, 3 + item] = expected[3 + item, user] = value
    torch.testing.assert_close(adjacency, expected)


def test_normalized_adjacency_leaves_isolated_nodes_empty_and_rejects_bad_indices():
    adjacency = normalized_adjacency(3, 4, torch.tensor([0]), torch.tensor([0])).to_dense()
    assert adjacency[1].abs().sum() == 0 and adjacency[3 + 3].abs().sum() == 0
    with pytest.raises(ValueError, match=r"item indices must lie in \[0, 4\)"):
        normalized_adjacency(3, 4, torch.tensor([0]), torch.tensor([4]))


def model_of(model_class, data: InteractionData | None = None, **options):
    torch.manual_seed(0)
    return model_class.from_data(data or tiny_interactions(), embed_size=6, **options)


def test_lightgcn_propagation_equals_dense_matrix_powers():
    model = model_of(LightGCN, n_layers=3)
    config = model.config
    dense = dense_adjacency(config.num_users, config.num_items, model.graph_users, model.graph_items)
    ego = model.ego_embeddings().detach()
    expected = sum(torch.linalg.matrix_power(dense, k) @ ego for k in range(4)) / 4
    output = model(perturbed=False)
    torch.testing.assert_close(torch.cat([output.user_embeddings, output.item_embeddings]), expected)


def test_xsimgcl_excludes_the_ego_layer_and_contrasts_layer_l_star():
    model = model_of(XSimGCL, n_layers=2, cl_layer=1, eps=0.0)
    config = model.config
    dense = dense_adjacency(config.num_users, config.num_items, model.graph_users, model.graph_items)
    ego = model.ego_embeddings().detach()
    output = model(perturbed=True)  # eps = 0: the perturbed pass is the clean one
    final = torch.cat([output.user_embeddings, output.item_embeddings])
    torch.testing.assert_close(final, (dense @ ego + dense @ dense @ ego) / 2)
    torch.testing.assert_close(
        torch.cat([output.contrast_user_embeddings, output.contrast_item_embeddings]), dense @ ego
    )


def test_xsimgcl_noise_keeps_the_sign_and_has_row_norm_eps():
    model = model_of(XSimGCL, eps=0.3)
    layer = torch.randn(50, 6)
    noise = model.perturb(layer) - layer
    torch.testing.assert_close(noise.norm(dim=1), torch.full((50,), 0.3))
    assert torch.equal(torch.sign(noise), torch.sign(layer))
    assert not torch.allclose(model(perturbed=True).user_embeddings, model(perturbed=False).user_embeddings)


def test_xsimgcl_training_mode_perturbs_and_eval_mode_is_clean():
    model = model_of(XSimGCL, eps=0.2)
    clean = model.eval()().user_embeddings
    torch.testing.assert_close(model(perturbed=False).user_embeddings, clean)
    assert not torch.allclose(model.train()().user_embeddings, clean)


def test_row_normalized_propagation_averages_neighbours_and_ignores_zero_weight_rows():
    edges = torch.tensor([[0, 0, 1, 2], [1, 2, 0, 0]])
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 2.0], [4.0, 0.0]])
    out = row_normalized_propagation(edges, torch.tensor([1.0, 3.0, 0.0, 1.0]), embeddings)
    torch.testing.assert_close(out, torch.tensor([[3.0, 0.5], [0.0, 0.0], [1.0, 0.0]]))


def test_dccf_layer_matches_the_spec_formula_on_dense_matrices():
    model = model_of(DCCF, n_layers=1, n_intents=3)
    config = model.config
    users, items = model.graph_users, model.graph_items
    dense = dense_adjacency(config.num_users, config.num_items, users, items)
    binary = (dense > 0).float()
    e = model.ego_embeddings().detach()
    eu, ei = e.split([config.num_users, config.num_items])
    cu, ci = model.user_intents.detach(), model.item_intents.detach()
    z = dense @ e
    r = torch.cat([torch.softmax(eu @ cu, 1) @ cu.T, torch.softmax(ei @ ci, 1) @ ci.T])

    def masked(source):
        weights = (torch.nn.functional.cosine_similarity(source[:, None], source[None, :], dim=-1) + 1) / 2 * binary
        return weights / weights.sum(1, keepdim=True).clamp_min(1e-30) @ e

    output = model(perturbed=False)
    z_out, r_out, hb_out, hg_out = output.layer_views[0]
    torch.testing.assert_close(z_out, z)
    torch.testing.assert_close(r_out, r)
    torch.testing.assert_close(hb_out, masked(z))
    torch.testing.assert_close(hg_out, masked(r))
    final = torch.cat([output.user_embeddings, output.item_embeddings])
    torch.testing.assert_close(final, e + (z + r + masked(z) + masked(r) + e))  # SUM of E^(0) and E^(1)


def test_dccf_single_intent_view_is_the_prototype_for_every_node():
    model = model_of(DCCF, n_intents=1)
    view = model.intent_view(model.ego_embeddings())
    torch.testing.assert_close(view[: model.config.num_users], model.user_intents.T.expand(model.config.num_users, -1))


@pytest.mark.parametrize("model_class, options", [(LightGCN, {}), (XSimGCL, {"eps": 0.2}), (DCCF, {"n_intents": 4})])
def test_reloaded_model_gives_identical_scores_and_recommends_without_data(tmp_path, model_class, options):
    model = model_of(model_class, **options)
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path)
    assert type(reloaded) is model_class
    users = torch.arange(model.config.num_users)
    assert torch.equal(reloaded.scores(users), model.scores(users))
    (items, scores), (expected_items, expected_scores) = (m.recommend(["u3", "u0"], k=5) for m in (reloaded, model))
    assert items == expected_items and torch.equal(scores, expected_scores)


def test_recommend_excludes_training_items_and_names_unknown_users():
    data = tiny_interactions()
    model = model_of(LightGCN, data)
    items, scores = model.recommend(["u0", "u5"], k=10)
    seen = {
        u: {
            i
            for uu, i in zip(*[data.user_map.decode(data.train[:, 0]), data.item_map.decode(data.train[:, 1])])
            if uu == u
        }
        for u in ("u0", "u5")
    }
    assert not set(items[0]) & seen["u0"] and not set(items[1]) & seen["u5"]
    assert scores.shape == (2, 10) and torch.all(scores[:, :-1] >= scores[:, 1:])
    with pytest.raises(KeyError, match="u404"):
        model.recommend(["u0", "u404"], k=3)
    with pytest.raises(ValueError, match="k must lie"):
        model.recommend(["u0"], k=0)


def test_duplicate_interactions_collapse_to_one_edge():
    data = InteractionData.from_pairs([("a", "x"), ("a", "x"), ("b", "x"), ("b", "y")], [("a", "y")])
    model = model_of(LightGCN, data)
    assert model.config.num_interactions == 3
    assert model.graph_users.tolist() == [0, 1, 1] and model.graph_items.tolist() == [0, 0, 1]


def test_configs_refuse_bad_sizes():
    with pytest.raises(ValueError, match="cl_layer"):
        XSimGCLConfig(n_layers=2, cl_layer=3)
    with pytest.raises(ValueError, match="eps"):
        XSimGCLConfig(eps=-0.1)
    with pytest.raises(ValueError, match="num_users and num_items"):
        LightGCN(LightGCNConfig())
