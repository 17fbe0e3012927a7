"""KCL: knowledge graph augmentation, KMPNN against a hand computation, readouts, the loss, save/reload, training."""

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from hf_contrastive.data.molecules import (
    NUM_BOND_TYPES,
    GraphBatch,
    graph_processor,
    pad_graphs,
    smiles_to_graph,
)
from hf_contrastive.data.multimodal import MultiModalCollator
from hf_contrastive.models.kcl import (
    ElementKnowledgeGraph,
    KCLConfig,
    KCLForMolecularPropertyPrediction,
    KCLModel,
    KMPNNLayer,
    augment_with_knowledge,
    period_and_group,
)
from hf_contrastive.objectives.kcl import KCLLoss
from hf_contrastive.trainers.multimodal import MultiModalConfig, MultiModalTrainer

from ..objectives.distributed_objective import assert_two_processes_match_one

TINY = dict(node_input_dim=8, edge_input_dim=4, hidden_dim=4, edge_hidden_dim=8, mp_steps=2, set2set_iterations=2)
TINY |= dict(set2set_lstm_layers=1, projection_hidden_dim=8, projection_dim=6)
MOLECULES = ["CCO", "c1ccccc1O", "CC(=O)[O-].[Na+]", "ClCCBr", "CCN(CC)CC", "OC(=O)c1ccccc1"]


def knowledge():
    return ElementKnowledgeGraph.build()


def element_attributes(atomic_number):
    return {entity for entity, _ in knowledge().attributes_of(atomic_number)}


def features(config, column, smiles=MOLECULES):
    return pad_graphs([config.featurizers()[column](s) for s in smiles])


# ----------------------------------------------------------------------------------------------- knowledge graph
def test_periodic_table_places_and_facts():
    assert [period_and_group(z) for z in (1, 2, 6, 17, 26, 57, 72, 86, 118)] == [
        (1, 1), (1, 18), (2, 14), (3, 17), (4, 8), (6, None), (6, 4), (6, 18), (7, 18)
    ]  # fmt: skip
    names = {knowledge().entities[e] for e in element_attributes(17)}
    assert {"Halogen", "Group17", "Period3", "Gas", "Nonmetal", "Electronegativity5"} <= names
    assert len(knowledge().relations) == 9 and all(knowledge().attributes_of(z) for z in range(1, 119))


def test_ethanol_augmentation_adds_one_node_per_distinct_attribute():
    graph = augment_with_knowledge(smiles_to_graph("CCO"), knowledge())
    carbon, oxygen = knowledge().attributes_of(6), knowledge().attributes_of(8)
    distinct = element_attributes(6) | element_attributes(8)
    assert graph.num_nodes == 3 + len(distinct)
    assert len(graph.edge_type_ids) == 4 + 2 * len(carbon) + len(oxygen)
    knowledge_edges = [e for e, flag in zip(graph.edge_index, graph.edge_is_knowledge) if flag]
    assert all(dst < 3 <= src for src, dst in knowledge_edges)  # attribute -> atom: attributes have no in-edges
    types = [t for t, flag in zip(graph.edge_type_ids, graph.edge_is_knowledge) if flag]
    assert min(types) >= NUM_BOND_TYPES and max(types) < NUM_BOND_TYPES + len(knowledge().relations)
    assert min(graph.node_ids[3:]) >= 119
    shared = (element_attributes(6) & element_attributes(8)).pop()  # e.g. Period2: one node, three out-edges
    node = graph.node_ids.index(119 + shared)
    assert sorted(dst for src, dst in knowledge_edges if src == node) == [0, 1, 2]


@pytest.mark.parametrize("smiles", ["[Cl].CC(C)N", "CC(=O)[O-].[Na+]", "CC.[K+].CN"])
def test_knowledge_edges_attach_to_the_renumbered_atoms_of_their_element(smiles):
    graph = augment_with_knowledge(smiles_to_graph(smiles), knowledge())
    atoms = len(smiles_to_graph(smiles).node_ids)
    for (src, dst), flag, type_id in zip(graph.edge_index, graph.edge_is_knowledge, graph.edge_type_ids):
        if flag:
            assert dst < atoms <= src
            entity = graph.node_ids[src] - 119
            assert (entity, type_id - NUM_BOND_TYPES) in knowledge().attributes_of(graph.node_ids[dst])
    every_atom = [dst for (src, dst), flag in zip(graph.edge_index, graph.edge_is_knowledge) if flag]
    assert set(every_atom) == set(range(atoms))  # every kept atom receives its element's edges
    alkali = knowledge().entities.index("AlkaliMetal") + 119
    assert alkali not in graph.node_ids  # the dropped counter-ion brings no knowledge node


def test_isolated_atom_before_others_keeps_nitrogen_knowledge_on_nitrogen():
    graph = augment_with_knowledge(smiles_to_graph("[Cl].CC(C)N"), knowledge())
    pnictogen = graph.node_ids.index(knowledge().entities.index("Pnictogen") + 119)
    assert [dst for src, dst in graph.edge_index if src == pnictogen] == [3]  # RDKit index 4, renumbered 3
    assert knowledge().entities.index("Halogen") + 119 not in graph.node_ids


# ----------------------------------------------------------------------------------------------- KMPNN by hand
def test_kmpnn_step_matches_a_hand_computed_three_atom_graph():
    torch.manual_seed(0)
    hidden = 3
    layer = KMPNNLayer(hidden, edge_input_dim=2, edge_hidden_dim=5)
    edge_embedding = torch.nn.Embedding(6, 2)
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    # atoms 0-1 (single), 1-2 (double); attribute node 3 -> atoms 0 and 2 (relation id 5)
    edges = [(0, 1, 0, False), (1, 0, 0, False), (1, 2, 1, False), (2, 1, 1, False), (3, 0, 5, True), (3, 2, 5, True)]
    graph = GraphBatch(
        node_ids=torch.zeros(4, dtype=torch.long),
        graph_index=torch.zeros(4, dtype=torch.long),
        edge_index=torch.tensor([[u for u, *_ in edges], [v for _, v, *_ in edges]]),
        edge_type_ids=torch.tensor([t for *_, t, _ in edges]),
        edge_is_knowledge=torch.tensor([k for *_, k in edges]),
        num_graphs=1,
    )
    h = torch.randn(4, hidden)
    w = layer.attention.weight[0]

    def transform(u, type_id, is_knowledge):
        matrix = layer.edge_networks[int(is_knowledge)](edge_embedding.weight[type_id]).view(hidden, hidden)
        return h[u] @ matrix

    expected = torch.zeros(4, hidden)
    for v in range(4):
        for kind in (False, True):
            incoming = [(u, t) for u, dst, t, k in edges if dst == v and k == kind]
            if not incoming:
                continue
            scores = torch.stack([F.leaky_relu(w @ torch.cat([h[u], h[v]]), 0.01) for u, _ in incoming])
            alpha = torch.softmax(scores, dim=0)
            expected[v] += sum(a * transform(u, t, kind) for a, (u, t) in zip(alpha, incoming))
    expected = F.relu(expected + layer.bias)
    torch.testing.assert_close(layer(h, graph, edge_embedding), expected)
    assert torch.equal(layer(h, graph, edge_embedding)[3], F.relu(layer.bias))  # no in-edges: bias only


# ----------------------------------------------------------------------------------------------- encoders
def test_graph_embeddings_have_twice_the_node_width_and_ignore_atom_order():
    torch.manual_seed(0)
    config = KCLConfig(**TINY)
    model = KCLModel(config).eval()
    out = model(features(config, "original"), features(config, "augmented"))
    assert out.graph_emb_original.shape == out.graph_emb_augmented.shape == (len(MOLECULES), 8)
    assert out.z_original.shape == (len(MOLECULES), 6) and out.loss.ndim == 0
    permuted = ["OCC", "Oc1ccccc1", "[Na+].[O-]C(C)=O", "BrCCCl", "C(C)N(CC)CC", "c1ccc(cc1)C(O)=O"]
    again = model(features(config, "original", permuted), features(config, "augmented", permuted))
    torch.testing.assert_close(again.graph_emb_original, out.graph_emb_original, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again.graph_emb_augmented, out.graph_emb_augmented, atol=1e-5, rtol=1e-5)


def test_without_knowledge_both_views_see_the_molecular_graph():
    config = KCLConfig(**TINY, use_knowledge=False)
    assert torch.equal(features(config, "augmented")["node_ids"], features(config, "original")["node_ids"])


def test_save_and_reload_give_identical_embeddings_and_a_foreign_graph_is_refused(tmp_path):
    torch.manual_seed(0)
    config = KCLConfig(**TINY)
    model = KCLModel(config).eval()
    model.save_pretrained(tmp_path)
    reloaded = KCLModel.from_pretrained(tmp_path).eval()
    first = model(features(config, "original"), features(config, "augmented"))
    second = reloaded(features(config, "original"), features(config, "augmented"))
    for name in ("z_original", "z_augmented", "loss"):
        assert torch.equal(first[name], second[name])
    foreign = KCLConfig(**TINY, kg_entities=["Gas", *config.kg_entities])
    with pytest.raises(ValueError, match="another element knowledge graph"):
        KCLModel(foreign)
    with pytest.raises(ValueError, match="got 'smiles'"):
        model.embed_column("smiles", features(config, "original"))


def test_bad_config_values_are_refused():
    with pytest.raises(ValueError, match="encoder must be 'gcn'"):
        KCLConfig(encoder="gin")
    with pytest.raises(ValueError, match="task_type"):
        KCLConfig(task_type="ranking")
    with pytest.raises(ValueError, match=">= 1"):
        KCLConfig(mp_steps=0)


# ----------------------------------------------------------------------------------------------- objective
def test_loss_hand_cases_orthogonal_identical_and_swapped():
    n = 8
    orthogonal = torch.eye(2 * n, dtype=torch.float64)[:n]
    loss = KCLLoss()({"original": orthogonal, "augmented": orthogonal}, {}).loss
    assert loss.item() == pytest.approx(math.log1p((2 * n - 2) * math.exp(-20)), rel=1e-9)
    same = torch.ones(n, 5, dtype=torch.float64)
    assert KCLLoss()({"original": same, "augmented": same}, {}).loss.item() == pytest.approx(math.log(2 * n - 1))
    z, z2 = torch.randn(n, 5, dtype=torch.float64), torch.randn(n, 5, dtype=torch.float64)
    forward = KCLLoss()({"original": z, "augmented": z2}, {}).loss
    swapped = KCLLoss()({"original": z2, "augmented": z}, {}).loss
    assert forward.item() == pytest.approx(swapped.item(), rel=1e-12)
    # the spec's formula written out: 2N rows, self masked, logits x 20, target (r + N) mod 2N
    e = F.normalize(torch.cat([z, z2]), dim=1)
    logits = 20 * (e @ e.T - 1e12 * torch.eye(2 * n, dtype=torch.float64))
    assert forward.item() == pytest.approx(F.cross_entropy(logits, (torch.arange(2 * n) + n) % (2 * n)).item())


def test_loss_gradient_matches_finite_differences():
    z = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: KCLLoss()({"original": a, "augmented": b}, {}).loss, (z, z2))


def test_one_sgd_step_raises_the_agreement_of_the_two_views():
    torch.manual_seed(0)
    z = torch.randn(16, 8, requires_grad=True)
    z2 = torch.randn(16, 8, requires_grad=True)
    before = F.cosine_similarity(z, z2).mean()
    KCLLoss()({"original": z, "augmented": z2}, {}).loss.backward()
    after = F.cosine_similarity(z - 0.1 * z.grad, z2 - 0.1 * z2.grad).mean()
    assert after > before + 1e-3


def test_two_processes_match_one(tmp_path):
    torch.manual_seed(0)
    embeddings = {name: torch.randn(8, 5, dtype=torch.float64) for name in ("original", "augmented")}
    assert_two_processes_match_one(tmp_path, KCLLoss, embeddings, {"labels": torch.arange(8)})


# ----------------------------------------------------------------------------------------------- training
def test_trainer_updates_encoders_and_projector_but_not_frozen_readouts(tmp_path):
    torch.manual_seed(0)
    config = KCLConfig(**TINY)
    model = KCLModel(config)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = MultiModalConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=3, max_steps=2, learning_rate=1e-2, report_to="none",
        use_cpu=True, save_strategy="no", disable_tqdm=True, train_sampling_strategy="sequential",
    )  # fmt: skip
    processors = {column: graph_processor(featurize) for column, featurize in config.featurizers().items()}
    trainer = MultiModalTrainer(
        model,
        args,
        train_dataset=Dataset.from_dict({"original": MOLECULES, "augmented": MOLECULES}),
        objective=KCLLoss(),
        data_collator=MultiModalCollator(processors),
    )
    trainer.train()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert any(n.startswith("gcn_encoder") for n in changed) and any(n.startswith("kmpnn_encoder") for n in changed)
    assert any(n.startswith("projector") for n in changed)
    assert not any(n.startswith(("wsm_readout", "set2set_readout")) for n in changed)
    assert trainer.embed_values("augmented", MOLECULES[:2]).shape == (2, 6)


def test_gradient_cache_gives_the_uncached_gradient():
    torch.manual_seed(0)
    config = KCLConfig(**TINY, train_readouts_in_pretraining=True)
    model = KCLModel(config)
    batch = {column: features(config, column) for column in ("original", "augmented")}
    model(batch["original"], batch["augmented"]).loss.backward()
    uncached = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    from hf_contrastive.cache import GradientCache

    def embed(columns):
        return {c: {c: model.embed_column(c, f)["embedding"]} for c, f in columns.items()}

    GradientCache(row_budget=2).step_columns(
        embed,
        batch,
        loss_fn=lambda e: (KCLLoss()(e, {}).loss, {}),
        loss_scale=1.0,
        backward=lambda loss: loss.backward(),
    )
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, uncached[name], atol=1e-6, rtol=1e-5)


def test_property_predictor_starts_from_the_pretrained_encoder_and_masks_missing_labels(tmp_path):
    torch.manual_seed(0)
    pretrained = KCLModel(KCLConfig(**TINY))
    model = KCLForMolecularPropertyPrediction.from_pretraining(pretrained, num_tasks=2, encoder="kmpnn")
    assert torch.equal(model.kmpnn_encoder.layer.bias, pretrained.kmpnn_encoder.layer.bias)
    assert not hasattr(model, "gcn_encoder")
    inputs = features(model.config, "augmented")
    labels = torch.tensor([[1.0, float("nan")], [0, 1], [1, 0], [0, 0], [1, 1], [float("nan"), 0]])
    mask = ~labels.isnan()
    output = model(**inputs, labels=labels, label_mask=mask)
    manual = F.binary_cross_entropy_with_logits(output.logits[mask], labels[mask])
    torch.testing.assert_close(output.loss, manual)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(20):
        optimizer.zero_grad()
        loss = model(**inputs, labels=labels, label_mask=mask).loss
        loss.backward()
        optimizer.step()
    assert loss < output.loss
    model.eval().save_pretrained(tmp_path)
    reloaded = KCLForMolecularPropertyPrediction.from_pretrained(tmp_path).eval()
    assert torch.equal(reloaded(**inputs).logits, model(**inputs).logits)
    with pytest.raises(ValueError, match=r"labels must be \[B, 2\]"):
        model(**inputs, labels=labels[:, :1])


def test_frozen_encoder_trains_only_the_predictor():
    pretrained = KCLModel(KCLConfig(**TINY))
    model = KCLForMolecularPropertyPrediction.from_pretraining(pretrained, freeze_encoder=True, task_type="regression")
    model(**features(model.config, "original"), labels=torch.randn(6, 1)).loss.backward()
    assert all(p.grad is None for name, p in model.named_parameters() if not name.startswith("predictor"))
    assert model.predictor[-1].weight.grad is not None
