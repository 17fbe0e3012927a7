"""BPR, XSimGCL and DCCF loss terms on hand-computed cases."""

import math

import pytest
import torch
import torch.nn.functional as F

from hf_contrastive.models.graph_rec import GraphRecOutput
from hf_contrastive.objectives.bpr import BPRLoss, bpr_loss
from hf_contrastive.objectives.dccf import DCCFLoss
from hf_contrastive.objectives.xsimgcl import XSimGCLLoss, node_info_nce


def test_bpr_of_equal_scores_is_log_2_and_the_selfrec_form_adds_1e_5():
    scores = torch.zeros(4)
    assert bpr_loss(scores, scores).item() == pytest.approx(math.log(2))
    assert bpr_loss(scores, scores, log_epsilon=1e-5).item() == pytest.approx(-math.log(0.5 + 1e-5), rel=1e-6)
    assert bpr_loss(torch.tensor([2.0]), torch.tensor([0.0])).item() == pytest.approx(math.log1p(math.exp(-2)))


def test_info_nce_of_identical_rows_is_log_m_and_of_orthogonal_rows_the_closed_form():
    m, tau = 4, 0.5
    same = torch.ones(m, 3)
    positives = torch.arange(m)
    assert node_info_nce(same, same, positives, tau).item() / m == pytest.approx(math.log(m))
    eye = torch.eye(m)
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + m - 1))
    assert node_info_nce(eye, eye, positives, tau).item() / m == pytest.approx(expected)
    dccf_form = -math.log(math.e / (math.e + m - 1 + 1e-8) + 1e-8)
    assert node_info_nce(eye, eye, positives, 1.0, epsilon=1e-8).item() / m == pytest.approx(dccf_form)


def outputs(users: torch.Tensor, items: torch.Tensor, **views) -> GraphRecOutput:
    return GraphRecOutput(
        user_embeddings=users, item_embeddings=items, ego_user_embeddings=users, ego_item_embeddings=items, **views
    )


BATCH = {
    "user_id": torch.tensor([0, 1, 0]),
    "item_id": torch.tensor([1, 2, 1]),
    "neg_item_id": torch.tensor([0, 0, 2]),
}


def test_lightgcn_loss_is_bpr_plus_half_squared_ego_norms_over_the_batch():
    torch.manual_seed(0)
    users, items = torch.randn(2, 4), torch.randn(3, 4)
    result = BPRLoss(reg_weight=0.1)(outputs(users, items), BATCH)
    u, p, n = users[BATCH["user_id"]], items[BATCH["item_id"]], items[BATCH["neg_item_id"]]
    rec = F.softplus((u * n).sum(1) - (u * p).sum(1)).mean()
    reg = 0.1 * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / (2 * 3)
    torch.testing.assert_close(result.loss, rec + reg)


def test_xsimgcl_loss_matches_the_spec_by_hand():
    torch.manual_seed(0)
    users, items, cl_users, cl_items = torch.randn(2, 4), torch.randn(3, 4), torch.randn(2, 4), torch.randn(3, 4)
    views = {"contrast_user_embeddings": cl_users, "contrast_item_embeddings": cl_items}
    result = XSimGCLLoss(cl_weight=0.2, temperature=0.15, reg_weight=1e-2)(outputs(users, items, **views), BATCH)
    u, p, n = users[BATCH["user_id"]], items[BATCH["item_id"]], items[BATCH["neg_item_id"]]
    rec = -torch.log(1e-5 + torch.sigmoid((u * p).sum(1) - (u * n).sum(1))).mean()
    reg = 1e-2 * (u.norm() + p.norm()) / 3  # Frobenius, not squared; negatives excluded

    def info_nce(a, b):  # unique users {0, 1}, unique positive items {1, 2}
        logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / 0.15
        return -logits.log_softmax(1).diag().mean()

    cl = 0.2 * (info_nce(users, cl_users) + info_nce(items[1:], cl_items[1:]))
    torch.testing.assert_close(result.loss, rec + reg + cl)
    torch.testing.assert_close(result.logs["loss_cl"], cl)


def test_xsimgcl_regulariser_is_not_squared():
    users, items = torch.randn(2, 4), torch.randn(3, 4)
    views = {"contrast_user_embeddings": users, "contrast_item_embeddings": items}
    loss = XSimGCLLoss(reg_weight=1.0)
    once = loss(outputs(users, items, **views), BATCH).logs["loss_reg"]
    twice = loss(outputs(2 * users, 2 * items, **views), BATCH).logs["loss_reg"]
    torch.testing.assert_close(twice, 2 * once)


def dccf_outputs(users, items, layers=1):
    nodes = torch.cat([users, items])
    torch.manual_seed(1)
    views = tuple(tuple(torch.randn_like(nodes) for _ in range(4)) for _ in range(layers))
    return outputs(
        users, items, layer_views=views, user_intents=torch.ones(4, 2), item_intents=torch.full((4, 3), 2.0)
    )


def test_dccf_regularisers_are_batch_sums_and_prototype_norms():
    users, items = torch.randn(2, 4), torch.randn(3, 4)
    loss = DCCFLoss(emb_reg=0.5, cen_reg=0.1, ssl_reg=0.0)
    result = loss(dccf_outputs(users, items), BATCH)
    u, p, n = users[BATCH["user_id"]], items[BATCH["item_id"]], items[BATCH["neg_item_id"]]
    torch.testing.assert_close(result.logs["loss_emb"], 0.5 * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()))
    torch.testing.assert_close(result.logs["loss_cen"], torch.tensor(0.1 * (8 * 1.0 + 12 * 4.0)))
    doubled = {key: torch.cat([value, value]) for key, value in BATCH.items()}
    torch.testing.assert_close(loss(dccf_outputs(users, items), doubled).logs["loss_emb"], 2 * result.logs["loss_emb"])


def test_dccf_contrast_sums_three_views_per_layer_for_users_and_items():
    users, items = torch.randn(2, 4), torch.randn(3, 4)
    out = dccf_outputs(users, items, layers=2)
    result = DCCFLoss(temperature=1.0, ssl_reg=0.1)(out, BATCH)
    user_nodes, item_nodes = torch.tensor([0, 1]), torch.tensor([2 + 1, 2 + 2])

    def info_nce(a, b):
        exp = (F.normalize(a, dim=1) @ F.normalize(b, dim=1).T).exp()
        return -torch.log(exp.diag() / (exp.sum(1) + 1e-8) + 1e-8).mean()

    expected = sum(
        info_nce(graph[nodes], view[nodes])
        for graph, *others in out.layer_views
        for view in others
        for nodes in (user_nodes, item_nodes)
    )
    torch.testing.assert_close(result.logs["loss_cl"], 0.1 * expected)


def test_objectives_refuse_bad_hyperparameters():
    with pytest.raises(ValueError, match="temperature"):
        XSimGCLLoss(temperature=0.0)
    with pytest.raises(ValueError, match="reg_weight"):
        BPRLoss(reg_weight=-1.0)
    with pytest.raises(ValueError, match="emb_reg"):
        DCCFLoss(emb_reg=-1.0)
