"""KCL: the Chemical Element Knowledge Graph, knowledge-augmented molecular graphs, GCN and KMPNN encoders.

Follows ``../shared/papers/kcl.md`` (the official code ZJU-Fangyin/KCL @ d729de1; the paper text was not read).

**Knowledge graph.** :class:`ElementKnowledgeGraph` holds ``(attribute, relation, element)`` triples for the 118
elements. The reference ``triples.txt`` and its RotatE embeddings are not available here, so the graph is rebuilt
from facts stated in this file: family, group and period (from the atomic number's place in the periodic table),
state at 25 C and metallicity (lists below), Pauling electronegativity (:data:`PAULING_ELECTRONEGATIVITY`, typed
from the standard table, e.g. the CRC Handbook / Wikipedia "Electronegativities of the elements (data page)";
*unverified*: typed without a source file to check against offline, so treat single values with care; they are only
binned into six coarse classes),
and atomic weight, covalent radius and outer-shell electrons from RDKit's periodic table (Blue Obelisk data).
Continuous facts are binned into named attribute entities (``Electronegativity4``), as KCL bins its own. Entity and
relation embeddings start random (no RotatE pre-training offline).

**Augmentation.** :func:`augment_with_knowledge` adds one node per distinct attribute of the molecule's elements
(node id ``num_atom_types + entity_id``) and a directed edge attribute -> atom (type id ``num_bond_types +
relation_id``, ``edge_is_knowledge=True``) for every atom of that element. Atoms are the *renumbered* atoms of
:func:`~hf_contrastive.data.molecules.smiles_to_graph` (isolated atoms dropped), which fixes the reference code's
edges to the wrong atom.

**Encoders** (plain PyTorch on :class:`~hf_contrastive.data.molecules.GraphBatch`):

- original view: ``h = WSM(GCN(G))`` [B, 2H]; GCN layer ``h'_v = GELU(sum_{u->v} h_u W + b) + GELU(W_r h_v + b_r)``;
  WSM readout ``[sum_v sigmoid(w.h_v + c) h_v || max_v h_v]``;
- augmented view: ``h' = Set2Set(KMPNN(G'))`` [B, 2H]; per step, for edge type ``t`` (bond / knowledge)
  ``a_uv = LeakyReLU_0.01(w^T [h_u || h_v])``, ``alpha_uv`` = softmax of ``a_uv`` over the in-edges of ``v`` of type
  ``t``, ``W_t(e) = reshape(MLP_t(emb(e)), H x H)``, ``m_v = sum_t sum_u alpha_uv h_u^T W_t(e_uv)``,
  ``h_v = GRU(ReLU(m_v + b), h_v)``, repeated ``mp_steps`` times with shared weights;
- ``z = P(h)``, ``z' = P(h')`` with one shared projector ``Linear(2H, 64) -> ReLU -> Linear(64, 128)``.

``W_t(e)`` depends only on the edge-type id, so it is computed once per id present (not per edge) and applied as
``h @ W_k`` for each id: the same values as the per-edge formula at O(K N H^2) instead of O(E H^2) memory.

Training: :class:`KCLModel` has ``embed_column`` (``original`` -> ``z``, ``augmented`` -> ``z'``), so
:class:`~hf_contrastive.trainers.multimodal.MultiModalTrainer` trains it with
:class:`~hf_contrastive.objectives.kcl.KCLLoss` (gather, gradient cache and card included: the padded per-row graph
features slice by rows); no trainer subclass is needed, and ``train_sampling_strategy="sequential"`` keeps the
hard-negative cluster order. :class:`KCLForMolecularPropertyPrediction` fine-tunes one encoder with a predictor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import torch
import torch.nn.functional as F
from rdkit import Chem
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from ..data.molecules import NUM_BOND_TYPES, GraphBatch, MolecularGraph, flatten_graphs, smiles_to_graph
from ..objectives.kcl import KCLLoss

NUM_ELEMENTS = 118
# Pauling electronegativity of Z = 1..86 (None: not defined, He / Ne / Ar); heavier elements get no such attribute.
PAULING_ELECTRONEGATIVITY = (
    [2.20, None, 0.98, 1.57, 2.04, 2.55, 3.04, 3.44, 3.98, None, 0.93, 1.31, 1.61, 1.90, 2.19, 2.58, 3.16, None]
    + [0.82, 1.00, 1.36, 1.54, 1.63, 1.66, 1.55, 1.83, 1.88, 1.91, 1.90, 1.65, 1.81, 2.01, 2.18, 2.55, 2.96, 3.00]
    + [0.82, 0.95, 1.22, 1.33, 1.60, 2.16, 1.90, 2.20, 2.28, 2.20, 1.93, 1.69, 1.78, 1.96, 2.05, 2.10, 2.66, 2.60]
    + [0.79, 0.89, 1.10, 1.12, 1.13, 1.14, 1.13, 1.17, 1.20, 1.20, 1.10, 1.22, 1.23, 1.24, 1.25, 1.10, 1.27]
    + [1.30, 1.50, 2.36, 1.90, 2.20, 2.20, 2.28, 2.54, 2.00, 1.62, 1.87, 2.02, 2.00, 2.20, 2.20]
)
GASES = {"H", "He", "N", "O", "F", "Ne", "Cl", "Ar", "Kr", "Xe", "Rn"}  # at 25 C, 1 atm
LIQUIDS = {"Br", "Hg"}
METALLOIDS = {"B", "Si", "Ge", "As", "Sb", "Te", "At"}
NONMETALS = {"H", "He", "C", "N", "O", "F", "Ne", "P", "S", "Cl", "Ar", "Se", "Br", "Kr", "I", "Xe", "Rn"}
FAMILIES = {1: "AlkaliMetal", 2: "AlkalineEarthMetal", 13: "BoronGroup", 14: "CarbonGroup", 15: "Pnictogen"}
FAMILIES |= {16: "Chalcogen", 17: "Halogen", 18: "NobleGas"} | {g: "TransitionMetal" for g in range(3, 13)}
PERIOD_ENDS = (2, 10, 18, 36, 54, 86, 118)
# Bin edges of the continuous facts (attribute k = values in [edge_{k-1}, edge_k)).
BINS = {
    "Weight": (10, 20, 40, 60, 100, 150, 200),  # g/mol
    "Electronegativity": (1.0, 1.5, 2.0, 2.5, 3.0, 3.5),  # Pauling
    "Radius": (0.5, 0.75, 1.0, 1.25, 1.5, 1.75),  # covalent radius, Angstrom
}


def period_and_group(atomic_number: int) -> tuple[int, int | None]:
    """Period and IUPAC group (None for the lanthanides and actinides La-Lu, Ac-Lr) of an element."""
    period = next(p for p, end in enumerate(PERIOD_ENDS, start=1) if atomic_number <= end)
    position = atomic_number - (PERIOD_ENDS[period - 2] if period > 1 else 0)  # 1-based place in its period
    size = PERIOD_ENDS[period - 1] - (PERIOD_ENDS[period - 2] if period > 1 else 0)
    if position <= 2 and not (period == 1 and position == 2):
        return period, position
    if size in (2, 8):  # He and the p-block of periods 2-3
        return period, 18 - (size - position)
    if size == 18:
        return period, position
    return period, (None if position <= 17 else position - 14)  # periods 6-7: 15 f-block places, then groups 4-18


def element_facts(atomic_number: int) -> list[tuple[str, str]]:
    """``(relation, attribute)`` pairs of one element (see the module docstring for the sources)."""
    table = Chem.GetPeriodicTable()
    symbol = table.GetElementSymbol(atomic_number)
    period, group = period_and_group(atomic_number)
    lanthanide = 57 <= atomic_number <= 71
    family = "Lanthanide" if lanthanide else "Actinide" if group is None else FAMILIES.get(group, "")
    facts = [
        ("isFamilyOf", "Hydrogen" if symbol == "H" else family),
        ("isPeriodOf", f"Period{period}"),
        ("isMetallicityOf", "Metalloid" if symbol in METALLOIDS else "Nonmetal" if symbol in NONMETALS else "Metal"),
        ("isWeightOf", binned("Weight", table.GetAtomicWeight(atomic_number))),
        ("isRadiusOf", binned("Radius", table.GetRcovalent(atomic_number))),
        ("isOuterElectronsOf", f"OuterElectrons{table.GetNOuterElecs(atomic_number)}"),
    ]
    if group is not None:
        facts.append(("isGroupOf", f"Group{group}"))
    if atomic_number <= 99:  # states of the heaviest elements are not known
        facts.append(("isStateOf", "Gas" if symbol in GASES else "Liquid" if symbol in LIQUIDS else "Solid"))
    if atomic_number <= len(PAULING_ELECTRONEGATIVITY) and PAULING_ELECTRONEGATIVITY[atomic_number - 1] is not None:
        facts.append(
            ("isElectronegativityOf", binned("Electronegativity", PAULING_ELECTRONEGATIVITY[atomic_number - 1]))
        )
    return facts


def binned(quantity: str, value: float) -> str:
    """The named bin of ``value`` (``Weight0`` below the first edge of ``BINS[quantity]``)."""
    return f"{quantity}{sum(value >= edge for edge in BINS[quantity])}"


class ElementKnowledgeGraph:
    """``(attribute, relation, element symbol)`` triples; entity and relation ids index the sorted name lists."""

    def __init__(self, triples: list[tuple[str, str, str]]) -> None:
        self.triples = tuple(triples)
        self.entities = sorted({head for head, _, _ in self.triples})
        self.relations = sorted({relation for _, relation, _ in self.triples})
        entity_ids = {name: i for i, name in enumerate(self.entities)}
        relation_ids = {name: i for i, name in enumerate(self.relations)}
        table = Chem.GetPeriodicTable()
        self._attributes: dict[int, list[tuple[int, int]]] = {}
        for head, relation, tail in self.triples:
            pair = (entity_ids[head], relation_ids[relation])
            self._attributes.setdefault(table.GetAtomicNumber(tail), []).append(pair)

    @classmethod
    @cache
    def build(cls) -> ElementKnowledgeGraph:
        """The graph of the 118 elements from :func:`element_facts` (built once per process)."""
        table = Chem.GetPeriodicTable()
        return cls(
            [
                (attribute, relation, table.GetElementSymbol(z))
                for z in range(1, NUM_ELEMENTS + 1)
                for relation, attribute in element_facts(z)
            ]
        )

    def attributes_of(self, atomic_number: int) -> list[tuple[int, int]]:
        """``(entity_id, relation_id)`` of every triple whose tail is the element ``atomic_number`` ([] if none)."""
        return self._attributes.get(atomic_number, [])


def augment_with_knowledge(
    graph: MolecularGraph, knowledge: ElementKnowledgeGraph, num_atom_types: int = NUM_ELEMENTS + 1
) -> MolecularGraph:
    """The knowledge-augmented graph: atoms and bonds of ``graph``, then one node per distinct attribute of its
    elements (id ``num_atom_types + entity_id``) with an edge attribute -> atom (type ``NUM_BOND_TYPES +
    relation_id``) for every atom of the element. Atom nodes are ``graph``'s (renumbered) nodes, in order."""
    node_ids, attribute_nodes = list(graph.node_ids), {}
    edges, types = list(graph.edge_index), list(graph.edge_type_ids)
    for atom, atomic_number in enumerate(graph.node_ids):
        for entity, relation in knowledge.attributes_of(atomic_number):
            if entity not in attribute_nodes:
                attribute_nodes[entity] = len(node_ids)
                node_ids.append(num_atom_types + entity)
            edges.append([attribute_nodes[entity], atom])
            types.append(NUM_BOND_TYPES + relation)
    is_knowledge = [False] * len(graph.edge_type_ids) + [True] * (len(types) - len(graph.edge_type_ids))
    return MolecularGraph(graph.smiles, node_ids, edges, types, dict(graph.atom_map), is_knowledge)


# ----------------------------------------------------------------------------------------------- layers
def segment_softmax(scores: torch.Tensor, segments: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Softmax of ``scores`` [E] within each segment (``segments`` [E] in ``[0, num_segments)``)."""
    maxima = scores.new_full((num_segments,), -math.inf).scatter_reduce(0, segments, scores, "amax")
    weights = torch.exp(scores - maxima[segments])
    return weights / weights.new_zeros(num_segments).index_add(0, segments, weights)[segments]


class GCNLayer(nn.Module):
    """``h'_v = GELU(sum_{u->v} h_u W + b) + GELU(W_r h_v + b_r)``: DGL ``GraphConv(norm='none')`` + residual."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.neighbours = nn.Linear(in_dim, out_dim)
        self.residual = nn.Linear(in_dim, out_dim)

    def forward(self, h: torch.Tensor, graph: GraphBatch) -> torch.Tensor:
        source, destination = graph.edge_index
        projected = h @ self.neighbours.weight.T
        summed = projected.new_zeros(projected.shape).index_add(0, destination, projected[source])
        return F.gelu(summed + self.neighbours.bias) + F.gelu(self.residual(h))


class GCNEncoder(nn.Module):
    """Node states [N, H] of the original graph: atom embedding, then ``num_layers`` :class:`GCNLayer`."""

    def __init__(self, num_node_ids: int, input_dim: int, hidden_dim: int, num_layers: int) -> None:
        super().__init__()
        self.node_embedding = nn.Embedding(num_node_ids, input_dim)
        widths = [input_dim] + [hidden_dim] * num_layers
        self.layers = nn.ModuleList(GCNLayer(a, b) for a, b in zip(widths, widths[1:]))

    def forward(self, graph: GraphBatch) -> torch.Tensor:
        h = self.node_embedding(graph.node_ids)
        for layer in self.layers:
            h = layer(h, graph)
        return h


class KMPNNLayer(nn.Module):
    """One knowledge-aware message-passing step ``ReLU(m_v + b)`` [N, H] (formula in the module docstring)."""

    def __init__(self, hidden_dim: int, edge_input_dim: int, edge_hidden_dim: int) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.attention = nn.Linear(2 * hidden_dim, 1, bias=False)
        self.edge_networks = nn.ModuleList(  # MLP_0 for bonds, MLP_1 for knowledge edges
            nn.Sequential(
                nn.Linear(edge_input_dim, edge_hidden_dim), nn.ReLU(), nn.Linear(edge_hidden_dim, hidden_dim**2)
            )
            for _ in range(2)
        )
        self.bias = nn.Parameter(torch.zeros(hidden_dim))

    def forward(self, h: torch.Tensor, graph: GraphBatch, edge_embedding: nn.Embedding) -> torch.Tensor:
        source, destination = graph.edge_index
        scores = F.leaky_relu(self.attention(torch.cat([h[source], h[destination]], dim=-1)).squeeze(-1), 0.01)
        message = h.new_zeros(h.shape)
        for is_knowledge, network in enumerate(self.edge_networks):
            selected = graph.edge_is_knowledge == bool(is_knowledge)
            if not selected.any():
                continue  # nodes without in-edges of this type get no message from it
            type_ids, edge_to_type = graph.edge_type_ids[selected].unique(return_inverse=True)
            weights = network(edge_embedding(type_ids)).view(-1, self.hidden_dim, self.hidden_dim)  # [K, H, H]
            transformed = torch.einsum("nh,khg->kng", h, weights)  # h_u^T W_k for every node and present type
            values = transformed[edge_to_type, source[selected]]  # [E_t, H]
            alpha = segment_softmax(scores[selected], destination[selected], h.shape[0])
            message = message.index_add(0, destination[selected], alpha[:, None] * values)
        return F.relu(message + self.bias)


class KMPNNEncoder(nn.Module):
    """Node states [N, H] of the augmented graph: ``ReLU(Linear(emb(x)))``, then ``steps`` KMPNN + GRU updates."""

    def __init__(self, num_node_ids: int, num_edge_ids: int, config: KCLConfig) -> None:
        super().__init__()
        self.node_embedding = nn.Embedding(num_node_ids, config.node_input_dim)
        self.edge_embedding = nn.Embedding(num_edge_ids, config.edge_input_dim)
        self.input_projection = nn.Linear(config.node_input_dim, config.hidden_dim)
        self.layer = KMPNNLayer(config.hidden_dim, config.edge_input_dim, config.edge_hidden_dim)
        self.gru = nn.GRUCell(config.hidden_dim, config.hidden_dim)
        self.steps = config.mp_steps

    def forward(self, graph: GraphBatch) -> torch.Tensor:
        h = F.relu(self.input_projection(self.node_embedding(graph.node_ids)))
        for _ in range(self.steps):
            h = self.gru(self.layer(h, graph, self.edge_embedding), h)
        return h


class WeightedSumAndMax(nn.Module):
    """Graph readout ``[sum_v sigmoid(w.h_v + c) h_v || max_v h_v]`` [B, 2H] of node states [N, H]."""

    def __init__(self, hidden_dim: int) -> None:
        super().__init__()
        self.gate = nn.Linear(hidden_dim, 1)

    def forward(self, h: torch.Tensor, graph: GraphBatch) -> torch.Tensor:
        weighted = torch.sigmoid(self.gate(h)) * h
        summed = h.new_zeros(graph.num_graphs, h.shape[1]).index_add(0, graph.graph_index, weighted)
        index = graph.graph_index[:, None].expand_as(h)
        maxima = h.new_full((graph.num_graphs, h.shape[1]), -math.inf).scatter_reduce(0, index, h, "amax")
        return torch.cat([summed, maxima], dim=-1)


class Set2Set(nn.Module):
    """Set2Set readout [B, 2H]: ``iterations`` LSTM queries ``q``, attention ``softmax_v(h_v . q)``, ``[q || r]``."""

    def __init__(self, hidden_dim: int, iterations: int, lstm_layers: int) -> None:
        super().__init__()
        self.iterations = iterations
        self.lstm = nn.LSTM(2 * hidden_dim, hidden_dim, num_layers=lstm_layers)

    def forward(self, h: torch.Tensor, graph: GraphBatch) -> torch.Tensor:
        batch, hidden = graph.num_graphs, h.shape[1]
        state = (h.new_zeros(self.lstm.num_layers, batch, hidden),) * 2
        q_star = h.new_zeros(batch, 2 * hidden)
        for _ in range(self.iterations):
            q, state = self.lstm(q_star[None], state)
            q = q[0]
            attention = segment_softmax((h * q[graph.graph_index]).sum(-1), graph.graph_index, batch)
            readout = h.new_zeros(batch, hidden).index_add(0, graph.graph_index, attention[:, None] * h)
            q_star = torch.cat([q, readout], dim=-1)
        return q_star


# ----------------------------------------------------------------------------------------------- config and models
class KCLConfig(PretrainedConfig):
    """Sizes and options of KCL (defaults: the official ``pretrain.sh``).

    Args:
        node_input_dim / edge_input_dim: node and edge embedding widths (128 / 64, RotatE's sizes in KCL).
        hidden_dim: node state width H of both encoders (64); graph embeddings are 2H.
        edge_hidden_dim: hidden width of KMPNN's edge networks (128).
        mp_steps / gcn_layers: KMPNN steps (6) and GCN layers (2).
        set2set_iterations / set2set_lstm_layers: 6 / 3.
        projection_hidden_dim / projection_dim: the shared projector 2H -> 64 -> 128.
        contrastive_temperature: of the loss in :meth:`KCLModel.forward` (0.05: the reference code's hard-coded
            x20; its 0.1 flag is unused). Not named ``temperature``: transformers reserves that for generation.
        use_knowledge: False builds the augmented view without knowledge nodes (the no-KG ablation: both encoders
            then see the same molecular graph).
        train_readouts_in_pretraining: the reference code leaves the WSM and Set2Set readouts out of the optimizer
            during pre-training (False, faithful); True trains them.
        num_tasks / task_type / predictor_hidden_dim / predictor_dropout / encoder / freeze_encoder: the
            property-prediction head of :class:`KCLForMolecularPropertyPrediction` (``encoder``: "gcn" reads the
            original graph, "kmpnn" the augmented graph; ``freeze_encoder``: train the predictor only, as the
            reference ``finetune.py`` does).
        kg_entities / kg_relations: names of the knowledge graph the embeddings were built for (filled from
            :meth:`ElementKnowledgeGraph.build`; a mismatch at load time is an error).
    """

    model_type = "kcl"

    def __init__(
        self,
        node_input_dim: int = 128,
        edge_input_dim: int = 64,
        hidden_dim: int = 64,
        edge_hidden_dim: int = 128,
        mp_steps: int = 6,
        gcn_layers: int = 2,
        set2set_iterations: int = 6,
        set2set_lstm_layers: int = 3,
        projection_hidden_dim: int = 64,
        projection_dim: int = 128,
        contrastive_temperature: float = 0.05,
        use_knowledge: bool = True,
        train_readouts_in_pretraining: bool = False,
        original_column: str = "original",
        augmented_column: str = "augmented",
        num_tasks: int = 1,
        task_type: str = "classification",
        predictor_hidden_dim: int = 32,
        predictor_dropout: float = 0.0,
        encoder: str = "gcn",
        freeze_encoder: bool = False,
        kg_entities: list[str] | None = None,
        kg_relations: list[str] | None = None,
        **kwargs,
    ) -> None:
        sizes = [node_input_dim, edge_input_dim, hidden_dim, edge_hidden_dim, mp_steps, gcn_layers]
        sizes += [set2set_iterations, set2set_lstm_layers, projection_hidden_dim, projection_dim, num_tasks]
        if min(sizes) < 1:
            raise ValueError(f"KCLConfig sizes, steps and num_tasks must be >= 1, got {sizes}.")
        if task_type not in ("classification", "regression"):
            raise ValueError(f"task_type must be 'classification' or 'regression', got {task_type!r}.")
        if encoder not in ("gcn", "kmpnn"):
            raise ValueError(f"encoder must be 'gcn' (original graph) or 'kmpnn' (augmented graph), got {encoder!r}.")
        if contrastive_temperature <= 0:
            raise ValueError(f"contrastive_temperature must be > 0, got {contrastive_temperature}.")
        knowledge = ElementKnowledgeGraph.build()
        self.node_input_dim, self.edge_input_dim, self.hidden_dim = node_input_dim, edge_input_dim, hidden_dim
        self.edge_hidden_dim, self.mp_steps, self.gcn_layers = edge_hidden_dim, mp_steps, gcn_layers
        self.set2set_iterations, self.set2set_lstm_layers = set2set_iterations, set2set_lstm_layers
        self.projection_hidden_dim, self.projection_dim = projection_hidden_dim, projection_dim
        self.contrastive_temperature, self.use_knowledge = contrastive_temperature, use_knowledge
        self.train_readouts_in_pretraining = train_readouts_in_pretraining
        self.original_column, self.augmented_column = original_column, augmented_column
        self.num_tasks, self.task_type, self.encoder = num_tasks, task_type, encoder
        self.predictor_hidden_dim, self.predictor_dropout = predictor_hidden_dim, predictor_dropout
        self.freeze_encoder = freeze_encoder
        self.kg_entities = list(kg_entities) if kg_entities is not None else knowledge.entities
        self.kg_relations = list(kg_relations) if kg_relations is not None else knowledge.relations
        super().__init__(**kwargs)

    @property
    def num_atom_types(self) -> int:
        return NUM_ELEMENTS + 1  # atomic numbers 0 (RDKit's dummy atom *) .. 118

    @property
    def num_node_ids(self) -> int:
        return self.num_atom_types + len(self.kg_entities)

    @property
    def num_edge_ids(self) -> int:
        return NUM_BOND_TYPES + len(self.kg_relations)

    def knowledge_graph(self) -> ElementKnowledgeGraph:
        """The element knowledge graph; a ValueError when it differs from the one the model was built with."""
        knowledge = ElementKnowledgeGraph.build()
        if knowledge.entities != self.kg_entities or knowledge.relations != self.kg_relations:
            raise ValueError(
                "This KCL checkpoint was built for another element knowledge graph (entity / relation names differ "
                "from ElementKnowledgeGraph.build()): its node and edge embedding rows would be misread."
            )
        return knowledge

    def featurizers(self) -> dict:
        """``{original_column: SMILES -> graph, augmented_column: SMILES -> augmented graph}``."""
        knowledge = self.knowledge_graph()

        def augmented(smiles: str) -> MolecularGraph:
            graph = smiles_to_graph(smiles)
            return augment_with_knowledge(graph, knowledge, self.num_atom_types) if self.use_knowledge else graph

        return {self.original_column: smiles_to_graph, self.augmented_column: augmented}


@dataclass
class KCLOutput(ModelOutput):
    """Pre-training forward: the loss and the projections / graph embeddings of both views."""

    loss: torch.Tensor | None = None
    z_original: torch.Tensor | None = None
    z_augmented: torch.Tensor | None = None
    graph_emb_original: torch.Tensor | None = None
    graph_emb_augmented: torch.Tensor | None = None


class KCLPreTrainedModel(PreTrainedModel):
    """Shared base: config class and PyTorch's default initialisation (the modules reset themselves)."""

    config_class = KCLConfig
    base_model_prefix = "kcl"
    main_input_name = "node_ids"

    def _init_weights(self, module: nn.Module) -> None:
        """PyTorch's default initialisation."""

    def _build_encoders(self, config: KCLConfig, which: tuple[str, ...]) -> None:
        config.knowledge_graph()  # refuse a checkpoint of another knowledge graph before building embeddings
        if "gcn" in which:
            self.gcn_encoder = GCNEncoder(
                config.num_node_ids, config.node_input_dim, config.hidden_dim, config.gcn_layers
            )
            self.wsm_readout = WeightedSumAndMax(config.hidden_dim)
        if "kmpnn" in which:
            self.kmpnn_encoder = KMPNNEncoder(config.num_node_ids, config.num_edge_ids, config)
            self.set2set_readout = Set2Set(config.hidden_dim, config.set2set_iterations, config.set2set_lstm_layers)

    def graph_embeddings(self, encoder: str, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Graph embeddings [B, 2H] of padded graph features with the ``"gcn"`` or ``"kmpnn"`` encoder + readout."""
        graph = flatten_graphs(features)
        if encoder == "gcn":
            return self.wsm_readout(self.gcn_encoder(graph), graph)
        return self.set2set_readout(self.kmpnn_encoder(graph), graph)


class KCLModel(KCLPreTrainedModel):
    """KCL pre-training model: GCN + WSM on the original graph, KMPNN + Set2Set on the augmented graph, shared
    projector (arXiv:2112.00544; see the module docstring)."""

    def __init__(self, config: KCLConfig) -> None:
        super().__init__(config)
        self._build_encoders(config, ("gcn", "kmpnn"))
        hidden = 2 * config.hidden_dim
        self.projector = nn.Sequential(
            nn.Linear(hidden, config.projection_hidden_dim),
            nn.ReLU(),
            nn.Linear(config.projection_hidden_dim, config.projection_dim),
        )
        if not config.train_readouts_in_pretraining:
            for readout in (self.wsm_readout, self.set2set_readout):
                readout.requires_grad_(False)
        self.post_init()

    def _encoder_of(self, column: str) -> str:
        if column == self.config.original_column:
            return "gcn"
        if column == self.config.augmented_column:
            return "kmpnn"
        raise ValueError(
            f"KCLModel embeds the columns {self.config.original_column!r} (GCN) and {self.config.augmented_column!r} "
            f"(KMPNN) (config.original_column / augmented_column), got {column!r}."
        )

    def embed_column(self, column: str, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{"embedding": z [B, D], "graph_embedding": h [B, 2H]}`` of a column's padded graph features."""
        graph_embedding = self.graph_embeddings(self._encoder_of(column), features)
        return {"embedding": self.projector(graph_embedding), "graph_embedding": graph_embedding}

    def forward(
        self, original: dict[str, torch.Tensor], augmented: dict[str, torch.Tensor], return_loss: bool = True
    ) -> KCLOutput:
        """Both views' projections [B, D] and graph embeddings [B, 2H]; the KCL loss when ``return_loss``."""
        first = self.embed_column(self.config.original_column, original)
        second = self.embed_column(self.config.augmented_column, augmented)
        loss = None
        if return_loss:
            objective = KCLLoss(temperature=self.config.contrastive_temperature)
            loss = objective({"original": first["embedding"], "augmented": second["embedding"]}, {}).loss
        return KCLOutput(
            loss, first["embedding"], second["embedding"], first["graph_embedding"], second["graph_embedding"]
        )


@dataclass
class MolecularPropertyOutput(ModelOutput):
    """Property prediction: masked loss, ``logits`` [B, T] (or regression values) and graph embeddings [B, 2H]."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    graph_embedding: torch.Tensor | None = None


class KCLForMolecularPropertyPrediction(KCLPreTrainedModel):
    """One KCL encoder + readout and the predictor ``Dropout -> Linear(2H, h) -> GELU -> BatchNorm1d -> Linear(h, T)``.

    Loss: BCE-with-logits (classification) or MSE (regression) averaged over the *labelled* entries
    (``label_mask`` [B, T]; the reference code averages over all entries, diluting sparse tasks). Build it from a
    pre-trained :class:`KCLModel` with :meth:`from_pretraining`.
    """

    def __init__(self, config: KCLConfig) -> None:
        super().__init__(config)
        self._build_encoders(config, (config.encoder,))
        self.predictor = nn.Sequential(
            nn.Dropout(config.predictor_dropout),
            nn.Linear(2 * config.hidden_dim, config.predictor_hidden_dim),
            nn.GELU(),
            nn.BatchNorm1d(config.predictor_hidden_dim),
            nn.Linear(config.predictor_hidden_dim, config.num_tasks),
        )
        self.post_init()

    @classmethod
    def from_pretraining(cls, model: KCLModel, **head_options) -> KCLForMolecularPropertyPrediction:
        """A predictor over ``model``'s encoder (``head_options``: num_tasks, task_type, encoder, ...)."""
        config = KCLConfig(**{**model.config.to_dict(), **head_options})
        predictor = cls(config)
        missing, _ = predictor.load_state_dict(model.state_dict(), strict=False)
        untrained = [name for name in missing if not name.startswith("predictor.")]
        if untrained:
            raise ValueError(f"The pre-trained model lacks encoder weights {untrained}.")
        return predictor

    def forward(
        self,
        node_ids: torch.Tensor,
        node_mask: torch.Tensor,
        edge_index: torch.Tensor,
        edge_type_ids: torch.Tensor,
        edge_is_knowledge: torch.Tensor,
        edge_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        label_mask: torch.Tensor | None = None,
    ) -> MolecularPropertyOutput:
        """Predictions [B, T] of padded graph features (the view of ``config.encoder``); masked loss with labels."""
        features = dict(node_ids=node_ids, node_mask=node_mask, edge_index=edge_index, edge_type_ids=edge_type_ids)
        features |= dict(edge_is_knowledge=edge_is_knowledge, edge_mask=edge_mask)
        if self.config.freeze_encoder:
            with torch.no_grad():
                graph_embedding = self.graph_embeddings(self.config.encoder, features)
        else:
            graph_embedding = self.graph_embeddings(self.config.encoder, features)
        logits = self.predictor(graph_embedding)
        loss = None if labels is None else self.masked_loss(logits, labels, label_mask)
        return MolecularPropertyOutput(loss, logits, graph_embedding)

    def masked_loss(self, logits: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor | None) -> torch.Tensor:
        """Mean BCE-with-logits or squared error over the entries where ``label_mask`` [B, T] is true."""
        if labels.shape != logits.shape:
            raise ValueError(
                f"labels must be [B, {self.config.num_tasks}] (config.num_tasks), got {tuple(labels.shape)}."
            )
        mask = torch.ones_like(labels, dtype=torch.bool) if label_mask is None else label_mask.bool()
        if self.config.task_type == "classification":
            losses = F.binary_cross_entropy_with_logits(logits, labels.nan_to_num(0.0), reduction="none")
        else:
            losses = (logits - labels.nan_to_num(0.0)).pow(2)
        return (losses * mask).sum() / mask.sum().clamp(min=1)
