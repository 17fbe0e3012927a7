"""Molecules as graphs: MoleculeNet CSV loaders, SMILES -> graph with RDKit, scaffold / random splits, batching.

A :class:`MolecularGraph` holds integer node ids (the atomic number of an atom; models may add other node kinds,
e.g. KCL's knowledge-graph attribute nodes) and directed edges with an integer type id (a bond: SINGLE 0, DOUBLE 1,
TRIPLE 2, AROMATIC 3; both directions are stored). Isolated atoms (in no bond: salt counter-ions such as the
``[Cl]`` of BBBP row 1, metal ions, lone water) are dropped and the kept atoms renumbered; ``atom_map`` gives the
new index of each RDKit atom so that anything attached to atoms later uses the *renumbered* index (the KCL
reference code used the raw RDKit index: its knowledge edges land on the wrong atom when an isolated atom comes
first).

Invalid SMILES are never dropped silently: :func:`parse_molecules` raises on them (``invalid="raise"``) or skips
them with a warning that names each row and string (``invalid="skip"``) and returns them in ``skipped``.

Batching is plain PyTorch. ``torch_geometric`` is not installed here, and the two models need only a COO edge list
with graph offsets: :func:`pad_graphs` makes per-molecule padded tensors (row ``i`` = molecule ``i``, so the
generic collator, the gather and the gradient cache can slice a batch by rows), and :func:`flatten_graphs` turns
them into one disjoint-union graph (node ids ``[N]``, ``graph_index [N]``, ``edge_index [2, E]`` with offsets) for
message passing with ``index_add_`` / ``scatter_reduce``.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rdkit import Chem, RDLogger
from rdkit.Chem.Scaffolds import MurckoScaffold

logger = logging.getLogger(__name__)

BOND_TYPE_IDS = {
    Chem.BondType.SINGLE: 0,
    Chem.BondType.DOUBLE: 1,
    Chem.BondType.TRIPLE: 2,
    Chem.BondType.AROMATIC: 3,
}
NUM_BOND_TYPES = len(BOND_TYPE_IDS)
MOLECULENET_DIR = "../shared/data/moleculenet"


@dataclass(frozen=True)
class MoleculeNetTask:
    """One MoleculeNet CSV: its file, SMILES column, label columns (None: every other column) and task type."""

    file: str
    task_type: str  # "classification" (ROC-AUC) or "regression" (RMSE)
    label_columns: tuple[str, ...] | None = None
    smiles_column: str = "smiles"


MOLECULENET = {
    "bbbp": MoleculeNetTask("BBBP.csv", "classification", ("p_np",)),
    "tox21": MoleculeNetTask("tox21.csv", "classification"),
    "clintox": MoleculeNetTask("clintox.csv", "classification", ("FDA_APPROVED", "CT_TOX")),
    "sider": MoleculeNetTask("sider.csv", "classification"),
    "esol": MoleculeNetTask("delaney.csv", "regression", ("logp",)),  # the column holds ESOL log solubility
    "freesolv": MoleculeNetTask("freesolv.csv", "regression", ("freesolv",)),
    "lipophilicity": MoleculeNetTask("lipo.csv", "regression", ("lipo",)),
}


class InvalidMoleculeError(ValueError):
    """A SMILES that RDKit cannot parse, or that leaves no bonded atom (nothing to pass messages over)."""


@dataclass
class MolecularGraph:
    """One molecule: ``node_ids`` [n] (atomic numbers), ``edge_index`` [2, e] (source, destination), ``edge_type_ids``
    [e] (bond type ids), ``atom_map`` {RDKit atom index: node index} of the kept atoms."""

    smiles: str
    node_ids: list[int]
    edge_index: list[list[int]]
    edge_type_ids: list[int]
    atom_map: dict[int, int]
    edge_is_knowledge: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.edge_is_knowledge:
            self.edge_is_knowledge = [False] * len(self.edge_type_ids)

    @property
    def num_nodes(self) -> int:
        return len(self.node_ids)


def smiles_to_graph(smiles: str) -> MolecularGraph:
    """Parse ``smiles`` with RDKit into a :class:`MolecularGraph` without isolated atoms.

    Raises :class:`InvalidMoleculeError` for an unparsable SMILES, a molecule with no bond left (single atom, all
    isolated) or a bond type other than single/double/triple/aromatic.
    """
    if not isinstance(smiles, str) or not smiles.strip():
        raise InvalidMoleculeError(f"not a SMILES string: {smiles!r}")
    RDLogger.DisableLog("rdApp.*")  # the error is raised below with the string; RDKit's stderr text adds nothing
    molecule = Chem.MolFromSmiles(smiles)
    if molecule is None:
        raise InvalidMoleculeError(f"RDKit cannot parse the SMILES {smiles!r}")
    kept = [atom.GetIdx() for atom in molecule.GetAtoms() if atom.GetDegree() > 0]
    if not kept:
        raise InvalidMoleculeError(f"the SMILES {smiles!r} has no bonded atom (a single atom or only isolated ones)")
    atom_map = {rdkit_index: node for node, rdkit_index in enumerate(kept)}
    node_ids = [molecule.GetAtomWithIdx(index).GetAtomicNum() for index in kept]
    edges, types = [], []
    for bond in molecule.GetBonds():
        bond_type = BOND_TYPE_IDS.get(bond.GetBondType())
        if bond_type is None:
            raise InvalidMoleculeError(
                f"the SMILES {smiles!r} has a {bond.GetBondType()} bond; supported: single, double, triple, aromatic"
            )
        begin, end = atom_map[bond.GetBeginAtomIdx()], atom_map[bond.GetEndAtomIdx()]
        edges += [[begin, end], [end, begin]]
        types += [bond_type, bond_type]
    return MolecularGraph(smiles, node_ids, edges, types, atom_map)


@dataclass
class MoleculeTable:
    """Parsed molecules with labels: ``smiles`` [N], ``labels`` [N, T] float (NaN = missing), ``tasks`` [T]."""

    smiles: list[str]
    labels: np.ndarray
    tasks: list[str]
    task_type: str
    skipped: list[tuple[int, str, str]] = field(default_factory=list)  # (row, SMILES, reason)

    @property
    def label_mask(self) -> np.ndarray:
        """[N, T] bool: True where a label is present."""
        return ~np.isnan(self.labels)

    def subset(self, rows: Sequence[int]) -> MoleculeTable:
        rows = list(rows)
        return MoleculeTable([self.smiles[i] for i in rows], self.labels[rows], self.tasks, self.task_type)


def parse_molecules(smiles: Sequence[str], invalid: str = "skip") -> tuple[list[int], list[tuple[int, str, str]]]:
    """Indices of the SMILES that make a graph, and ``(row, SMILES, reason)`` of those that do not.

    ``invalid="skip"`` logs a warning naming every skipped row and string; ``invalid="raise"`` raises a ValueError
    that lists them. Rows are 0-based data rows (the CSV header is not counted).
    """
    if invalid not in ("skip", "raise"):
        raise ValueError(f"invalid must be 'skip' or 'raise', got {invalid!r}.")
    kept, skipped = [], []
    for row, text in enumerate(smiles):
        try:
            smiles_to_graph(text)
        except InvalidMoleculeError as error:
            skipped.append((row, text, str(error)))
        else:
            kept.append(row)
    if skipped:
        listing = "; ".join(f"row {row}: {text!r} ({reason})" for row, text, reason in skipped)
        if invalid == "raise":
            raise ValueError(f"{len(skipped)} invalid SMILES (invalid='raise'): {listing}")
        logger.warning("Skipped %d invalid SMILES (invalid='skip'): %s", len(skipped), listing)
    return kept, skipped


def load_moleculenet(name: str, data_dir: str | Path = MOLECULENET_DIR, invalid: str = "skip") -> MoleculeTable:
    """Load one MoleculeNet CSV (``bbbp``, ``tox21``, ``clintox``, ``sider``, ``esol``, ``freesolv``, ``lipophilicity``).

    Blank labels become NaN (masked in losses and metrics); invalid SMILES follow ``invalid`` (see
    :func:`parse_molecules`).
    """
    if name not in MOLECULENET:
        raise ValueError(f"Unknown MoleculeNet set {name!r}; available: {sorted(MOLECULENET)}.")
    task = MOLECULENET[name]
    path = Path(data_dir) / task.file
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        columns = list(reader.fieldnames or [])
    if task.smiles_column not in columns:
        raise ValueError(f"{path} has no column {task.smiles_column!r}; it has {columns}.")
    tasks = list(task.label_columns or [c for c in columns if c != task.smiles_column])
    missing = [c for c in tasks if c not in columns]
    if missing:
        raise ValueError(f"{path} has no label column(s) {missing}; it has {columns}.")
    smiles = [row[task.smiles_column] for row in rows]
    labels = np.array([[float(row[c]) if row[c].strip() else np.nan for c in tasks] for row in rows], dtype=np.float64)
    kept, skipped = parse_molecules(smiles, invalid)
    table = MoleculeTable([smiles[i] for i in kept], labels[kept], tasks, task.task_type, skipped)
    return table


def scaffold(smiles: str) -> str:
    """The Bemis-Murcko scaffold SMILES of a molecule (without chirality; ``""`` for acyclic molecules)."""
    return MurckoScaffold.MurckoScaffoldSmiles(mol=Chem.MolFromSmiles(smiles), includeChirality=False)


def scaffold_split(
    smiles: Sequence[str], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> tuple[list[int], list[int], list[int]]:
    """Train / valid / test row indices with no Bemis-Murcko scaffold in two splits (DeepChem / chemprop order).

    Scaffold sets are taken largest first, ties broken by the *later* first row first (DeepChem's
    ``sorted(..., key=(len, first row), reverse=True)``), and each goes to train while it fits in ``fractions[0]``,
    else to valid while that fits, else to test: the rare scaffolds end up in test. (Ties by the earlier row put the
    file's last singletons in test; BBBP's file ends with positives only, and its test ROC-AUC became undefined.)
    """
    _check_fractions(fractions)
    groups: dict[str, list[int]] = defaultdict(list)
    for row, text in enumerate(smiles):
        groups[scaffold(text)].append(row)
    ordered = sorted(groups.values(), key=lambda rows: (len(rows), rows[0]), reverse=True)
    train_size, valid_size = fractions[0] * len(smiles), (fractions[0] + fractions[1]) * len(smiles)
    splits: tuple[list[int], list[int], list[int]] = ([], [], [])
    for rows in ordered:
        if len(splits[0]) + len(rows) <= train_size:
            splits[0].extend(rows)
        elif len(splits[0]) + len(splits[1]) + len(rows) <= valid_size:
            splits[1].extend(rows)
        else:
            splits[2].extend(rows)
    return splits


def random_split(
    num_rows: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
) -> tuple[list[int], list[int], list[int]]:
    """Train / valid / test row indices of a seeded permutation in ``fractions``."""
    _check_fractions(fractions)
    order = np.random.default_rng(seed).permutation(num_rows).tolist()
    train_end, valid_end = round(fractions[0] * num_rows), round((fractions[0] + fractions[1]) * num_rows)
    return order[:train_end], order[train_end:valid_end], order[valid_end:]


def _check_fractions(fractions: tuple[float, float, float]) -> None:
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}.")


def pad_graphs(graphs: Sequence[MolecularGraph]) -> dict[str, torch.Tensor]:
    """Per-molecule padded tensors of a batch of B graphs (row ``i`` = graph ``i``).

    Returns ``node_ids`` [B, N_max] int64, ``node_mask`` [B, N_max] bool, ``edge_index`` [B, E_max, 2] int64 (local
    source, destination), ``edge_type_ids`` [B, E_max] int64, ``edge_is_knowledge`` [B, E_max] bool and
    ``edge_mask`` [B, E_max] bool. Padding is 0 / False.
    """
    if not graphs:
        raise ValueError("pad_graphs needs at least one graph.")
    batch, max_nodes = len(graphs), max(g.num_nodes for g in graphs)
    max_edges = max(max(len(g.edge_type_ids) for g in graphs), 1)
    out = {
        "node_ids": torch.zeros(batch, max_nodes, dtype=torch.long),
        "node_mask": torch.zeros(batch, max_nodes, dtype=torch.bool),
        "edge_index": torch.zeros(batch, max_edges, 2, dtype=torch.long),
        "edge_type_ids": torch.zeros(batch, max_edges, dtype=torch.long),
        "edge_is_knowledge": torch.zeros(batch, max_edges, dtype=torch.bool),
        "edge_mask": torch.zeros(batch, max_edges, dtype=torch.bool),
    }
    for row, graph in enumerate(graphs):
        nodes, edges = graph.num_nodes, len(graph.edge_type_ids)
        out["node_ids"][row, :nodes] = torch.tensor(graph.node_ids)
        out["node_mask"][row, :nodes] = True
        if edges:
            out["edge_index"][row, :edges] = torch.tensor(graph.edge_index)
            out["edge_type_ids"][row, :edges] = torch.tensor(graph.edge_type_ids)
            out["edge_is_knowledge"][row, :edges] = torch.tensor(graph.edge_is_knowledge)
            out["edge_mask"][row, :edges] = True
    return out


@dataclass
class GraphBatch:
    """A disjoint union of B graphs: ``node_ids`` [N], ``graph_index`` [N] (graph of each node), ``edge_index``
    [2, E] (global source, destination), ``edge_type_ids`` [E], ``edge_is_knowledge`` [E], ``num_graphs`` B."""

    node_ids: torch.Tensor
    graph_index: torch.Tensor
    edge_index: torch.Tensor
    edge_type_ids: torch.Tensor
    edge_is_knowledge: torch.Tensor
    num_graphs: int


GRAPH_FEATURES = ("node_ids", "node_mask", "edge_index", "edge_type_ids", "edge_is_knowledge", "edge_mask")


def flatten_graphs(features: dict[str, torch.Tensor]) -> GraphBatch:
    """The :class:`GraphBatch` of padded features from :func:`pad_graphs` (or a row slice of them)."""
    missing = [name for name in GRAPH_FEATURES if name not in features]
    if missing:
        raise ValueError(f"Graph features need {list(GRAPH_FEATURES)} (see pad_graphs); missing {missing}.")
    node_mask, edge_mask = features["node_mask"], features["edge_mask"]
    batch, max_nodes = node_mask.shape
    # Node (i, j) of the padded layout becomes global node offsets[i] + j; padded nodes are never referenced.
    offsets = torch.cumsum(node_mask.sum(dim=1), dim=0) - node_mask.sum(dim=1)
    global_edges = features["edge_index"] + offsets[:, None, None]
    graph_index = torch.arange(batch, device=node_mask.device)[:, None].expand(batch, max_nodes)
    return GraphBatch(
        node_ids=features["node_ids"][node_mask],
        graph_index=graph_index[node_mask],
        edge_index=global_edges[edge_mask].T.contiguous(),
        edge_type_ids=features["edge_type_ids"][edge_mask],
        edge_is_knowledge=features["edge_is_knowledge"][edge_mask],
        num_graphs=batch,
    )


def graph_processor(featurize: Callable[[str], MolecularGraph] = smiles_to_graph) -> Callable[[list], dict]:
    """A column processor for :class:`~hf_contrastive.data.multimodal.MultiModalCollator`: SMILES list -> padded
    graph features (``featurize`` builds each graph; memoised, since every epoch sees the same molecules)."""
    cache: dict[str, MolecularGraph] = {}

    def process(values: list) -> dict[str, torch.Tensor]:
        graphs = []
        for value in values:
            if value not in cache:
                cache[value] = featurize(value)
            graphs.append(cache[value])
        return pad_graphs(graphs)

    return process


def cluster_order(smiles: Sequence[str], threshold: float = 0.85, chunk_size: int = 2000) -> list[int]:
    """Row order that puts structurally similar molecules next to each other: KCL's hard-negative batches.

    As in KCL's ``data/cluster.py``: Morgan fingerprints (radius 2, 1024 bits), Butina clustering at Tanimoto
    distance ``threshold`` within consecutive chunks of ``chunk_size`` molecules (KCL: 50,000; the distance list
    is O(chunk^2) memory), clusters sorted largest first and their members concatenated. Iterate the data in this
    order without shuffling (``train_sampling_strategy="sequential"``) so each batch holds similar molecules.
    """
    from rdkit import DataStructs
    from rdkit.Chem import rdFingerprintGenerator
    from rdkit.ML.Cluster import Butina

    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=1024)
    fingerprints = [generator.GetFingerprint(Chem.MolFromSmiles(text)) for text in smiles]
    clusters: list[list[int]] = []
    for start in range(0, len(fingerprints), chunk_size):
        chunk = fingerprints[start : start + chunk_size]
        distances = []  # lower triangle, row by row, as Butina.ClusterData expects
        for i in range(1, len(chunk)):
            distances.extend(1.0 - s for s in DataStructs.BulkTanimotoSimilarity(chunk[i], chunk[:i]))
        found = Butina.ClusterData(distances, len(chunk), threshold, isDistData=True)
        clusters.extend([start + member for member in cluster] for cluster in found)
    clusters.sort(key=len, reverse=True)
    return [row for cluster in clusters for row in cluster]
