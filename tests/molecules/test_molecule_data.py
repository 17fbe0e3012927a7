"""Molecule data: SMILES parsing with an explicit invalid policy, isolated atoms, splits and graph batching."""

import logging

import numpy as np
import pytest
import torch

from hf_contrastive.data.molecules import (
    InvalidMoleculeError,
    flatten_graphs,
    load_moleculenet,
    pad_graphs,
    parse_molecules,
    random_split,
    scaffold,
    scaffold_split,
    smiles_to_graph,
)

SMILES = ["CCO", "not_a_smiles", "[Na+]", "CC(=O)O", "C1CC"]


def test_invalid_smiles_are_skipped_with_row_and_string_in_the_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="hf_contrastive.data.molecules"):
        kept, skipped = parse_molecules(SMILES, invalid="skip")
    assert kept == [0, 3]
    assert [(row, text) for row, text, _ in skipped] == [(1, "not_a_smiles"), (2, "[Na+]"), (4, "C1CC")]
    assert "no bonded atom" in skipped[1][2]
    message = caplog.text
    assert "3 invalid SMILES" in message and "row 1: 'not_a_smiles'" in message and "row 4: 'C1CC'" in message


def test_invalid_smiles_raise_under_the_raise_policy_and_unknown_policy_is_refused():
    with pytest.raises(ValueError, match=r"row 1: 'not_a_smiles'.*row 2: '\[Na\+\]'"):
        parse_molecules(SMILES, invalid="raise")
    with pytest.raises(ValueError, match="invalid must be 'skip' or 'raise'"):
        parse_molecules(SMILES, invalid="drop")
    with pytest.raises(InvalidMoleculeError, match="not a SMILES string"):
        smiles_to_graph(float("nan"))


def test_isolated_atoms_are_dropped_and_the_rest_renumbered():
    graph = smiles_to_graph("[Cl].CC(C)N")
    assert graph.node_ids == [6, 6, 6, 7]
    assert graph.atom_map == {1: 0, 2: 1, 3: 2, 4: 3}
    assert sorted(map(tuple, graph.edge_index)) == [(0, 1), (1, 0), (1, 2), (1, 3), (2, 1), (3, 1)]
    assert graph.edge_type_ids == [0] * 6 and not any(graph.edge_is_knowledge)
    aromatic = smiles_to_graph("c1ccccc1C=O")
    assert set(aromatic.edge_type_ids) == {0, 1, 3}  # single, double, aromatic


def test_csv_loader_masks_missing_labels_and_records_skipped_rows(tmp_path):
    path = tmp_path / "tox21.csv"
    header = (
        "smiles,NR-AR,NR-AR-LBD,NR-AhR,NR-Aromatase,NR-ER,NR-ER-LBD,NR-PPAR-gamma,SR-ARE,SR-ATAD5,SR-HSE,SR-MMP,SR-p53"
    )
    rows = ["CCO,1,,0,0,0,0,0,0,0,0,0,1", "XYZ,0,0,0,0,0,0,0,0,0,0,0,0", "CCN,,,,,,,,,,,,0"]
    path.write_text("\n".join([header, *rows]) + "\n")
    table = load_moleculenet("tox21", tmp_path)
    assert table.smiles == ["CCO", "CCN"] and len(table.tasks) == 12
    assert table.skipped[0][:2] == (1, "XYZ")
    assert table.label_mask.sum(axis=1).tolist() == [11, 1]
    assert table.labels[0, 0] == 1.0 and np.isnan(table.labels[0, 1])
    with pytest.raises(ValueError, match="Unknown MoleculeNet set 'bace'"):
        load_moleculenet("bace", tmp_path)
    (tmp_path / "BBBP.csv").write_text("mol,p_np\nCCO,1\n")
    with pytest.raises(ValueError, match="no column 'smiles'"):
        load_moleculenet("bbbp", tmp_path)


def test_real_bbbp_loads_every_row_with_one_task():
    table = load_moleculenet("bbbp")
    assert len(table.smiles) == 2039 and table.tasks == ["p_np"] and not table.skipped
    assert set(np.unique(table.labels)) == {0.0, 1.0}


def test_scaffold_split_puts_every_scaffold_in_one_split():
    smiles = load_moleculenet("bbbp").smiles[:400]
    splits = scaffold_split(smiles)
    assert sorted(sum(splits, [])) == list(range(400))
    assert len(splits[0]) <= 320 and len(splits[0]) + len(splits[1]) <= 360 and splits[2]
    scaffolds = [{scaffold(smiles[i]) for i in rows} for rows in splits]
    assert not (scaffolds[0] & scaffolds[1] or scaffolds[0] & scaffolds[2] or scaffolds[1] & scaffolds[2])


def test_random_split_is_seeded_disjoint_and_complete():
    first, again, other = random_split(50, seed=3), random_split(50, seed=3), random_split(50, seed=4)
    assert first == again and first != other
    assert [len(rows) for rows in first] == [40, 5, 5] and sorted(sum(first, [])) == list(range(50))
    with pytest.raises(ValueError, match="summing to 1"):
        random_split(10, (0.8, 0.3, 0.1))


def test_padding_and_flattening_offset_edges_into_one_union_graph():
    graphs = [smiles_to_graph("CCO"), smiles_to_graph("C=CN(C)C")]
    padded = pad_graphs(graphs)
    assert padded["node_ids"].shape == (2, 5) and padded["edge_index"].shape == (2, 8, 2)
    assert padded["node_mask"].sum(1).tolist() == [3, 5] and padded["edge_mask"].sum(1).tolist() == [4, 8]
    batch = flatten_graphs(padded)
    assert batch.node_ids.tolist() == [6, 6, 8, 6, 6, 7, 6, 6] and batch.graph_index.tolist() == [0] * 3 + [1] * 5
    expected = [list(edge) for edge in graphs[0].edge_index] + [[u + 3, v + 3] for u, v in graphs[1].edge_index]
    assert batch.edge_index.T.tolist() == expected
    sliced = flatten_graphs({name: value[1:] for name, value in padded.items()})  # a row slice (gradient cache)
    assert torch.equal(sliced.edge_index, torch.tensor(graphs[1].edge_index).T)
    with pytest.raises(ValueError, match="missing \\['edge_mask'\\]"):
        flatten_graphs({name: value for name, value in padded.items() if name != "edge_mask"})
