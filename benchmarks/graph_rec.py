"""Time one training epoch of LightGCN / XSimGCL / DCCF (GraphRecTrainer) against a plain PyTorch reference.

    python benchmarks/graph_rec.py                                         # ml-100k, CPU, LightGCN and XSimGCL
    python benchmarks/graph_rec.py --models dccf                           # DCCF against HKUDS/DCCF's structure
    python benchmarks/graph_rec.py --dataset amazon-beauty --device cuda   # the GPU check
    python benchmarks/graph_rec.py --dataset synthetic --max-steps 2 --json out.jsonl   # smoke

Both contenders train the same model from the same initial embeddings on the same epoch of (user, positive,
negative) triples (``TripleSampler``, seeded; drawn before the timer; DCCF: its uniform-user sampling), with Adam
at lr 1e-3 and batch 2048:

- ``reference``: SELFRec-style plain PyTorch (``model/graph/XSimGCL.py``, ``LightGCN.py``): a scipy-built
  ``D^-1/2 A D^-1/2`` as a ``torch.sparse_coo_tensor``, a Python loop of ``torch.sparse.mm`` per layer, the loss
  written inline (BPR, the L2 term, for XSimGCL the noise and the cross-layer InfoNCE over unique batch nodes).
  DCCF: HKUDS/DCCF ``model.py`` in plain PyTorch (``torch_sparse.spmm`` as COO ``torch.sparse.mm`` with per-edge
  values; the masks' cosines from ``index_select``-gathered edge rows; BPR, L_emb, L_cen and the 6L InfoNCE terms);
- ``ours``: ``GraphRecTrainer.training_step`` (one propagation, the registered objective, the Trainer's backward)
  + ``optimizer.step()`` + ``zero_grad``.

Before timing, both clean propagations from the shared initial embeddings are compared (``max_abs_diff``): the
benchmark stops if they differ by more than 1e-4. Reported: epoch seconds (sum of the timed steps), triples/s, peak
memory (CUDA allocator, or a forked child's peak RSS on the CPU; helpers shared with ``benchmarks/embeddings.py``)
and the ratios ours / reference.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from hf_contrastive.data.recsys import (
    InteractionData,
    TripleSampler,
    load_movielens_100k,
    load_selfrec_interactions,
)
from hf_contrastive.models.graph_rec import DCCF, LightGCN, XSimGCL
from hf_contrastive.objectives.bpr import BPRLoss
from hf_contrastive.objectives.dccf import DCCFLoss
from hf_contrastive.objectives.xsimgcl import XSimGCLLoss
from hf_contrastive.trainers.graph_rec import GraphRecConfig, GraphRecTrainer

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "../shared/data"
MODELS = {"lightgcn": LightGCN, "xsimgcl": XSimGCL, "dccf": DCCF}
XSIMGCL = {"eps": 0.2, "cl_layer": 1, "temperature": 0.15, "cl_weight": 0.2, "reg_weight": 1e-4}
DCCF_LOSS = {"temperature": 1.0, "emb_reg": 2.5e-5, "cen_reg": 5e-3, "ssl_reg": 0.1}  # HKUDS/DCCF parser.py
DCCF_INTENTS = 128


def load_module(path: Path, name: str) -> ModuleType:
    """Import a Python file by path (``sys.modules`` holds it: dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_data(name: str) -> InteractionData:
    """ml-100k (random 7:1:2 split), SELFRec's amazon-beauty, or a small synthetic graph (smoke)."""
    if name == "ml-100k":
        return InteractionData.from_dataset(load_movielens_100k(DATA / "ml-100k"), seed=0)
    if name == "amazon-beauty":
        return load_selfrec_interactions(DATA / "amazon-beauty-selfrec")
    generator = np.random.default_rng(0)
    pairs = {(f"u{u}", f"i{i}") for u, i in generator.integers(0, (200, 300), size=(3000, 2))}
    return InteractionData.from_pairs(sorted(pairs), test=[])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-100k", choices=("ml-100k", "amazon-beauty", "synthetic"))
    parser.add_argument("--models", default="lightgcn,xsimgcl", help=f"comma-separated, of {sorted(MODELS)}")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--embed-size", type=int, default=64)
    parser.add_argument("--max-steps", type=int, default=None, help="cut the epoch short (smoke)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before the epoch")
    parser.add_argument("--isolation", choices=("fork", "none"), default=None, help="default: fork on the CPU")
    parser.add_argument("--json", type=Path, default=None, help="append one JSON line per contender")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------------------------------- reference
class ReferenceGraphModel(torch.nn.Module):
    """SELFRec's LightGCN / XSimGCL encoder, written straight: scipy adjacency, sparse.mm loop, inline noise."""

    def __init__(self, data: InteractionData, initial: torch.Tensor, kind: str, n_layers: int) -> None:
        super().__init__()
        self.num_users, self.kind, self.n_layers = data.num_users, kind, n_layers
        self.embeddings = torch.nn.Parameter(initial.clone())
        self.register_buffer("adjacency", reference_adjacency(data), persistent=False)

    def forward(self, perturbed: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Final [n, d] and the contrast layer [n, d] (XSimGCL's first perturbed layer)."""
        ego, layers = self.embeddings, [] if self.kind == "xsimgcl" else [self.embeddings]
        for _ in range(self.n_layers):
            ego = torch.sparse.mm(self.adjacency, ego)
            if perturbed:
                ego = ego + torch.sign(ego) * F.normalize(torch.rand_like(ego), dim=-1) * XSIMGCL["eps"]
            layers.append(ego)
        contrast = layers[XSIMGCL["cl_layer"] - 1] if self.kind == "xsimgcl" else ego
        return torch.stack(layers).mean(dim=0), contrast


def reference_adjacency(data: InteractionData) -> torch.Tensor:
    """``D^-1/2 A D^-1/2`` of the bipartite graph built with scipy, as SELFRec's ``data/ui_graph.py`` does."""
    n = data.num_users + data.num_items
    users, items = data.train[:, 0].numpy(), data.train[:, 1].numpy() + data.num_users
    adjacency = sp.csr_matrix((np.ones(2 * len(users)), (np.r_[users, items], np.r_[items, users])), shape=(n, n))
    degree = np.asarray(adjacency.sum(axis=1)).flatten()
    inverse_sqrt = np.power(degree, -0.5, where=degree > 0, out=np.zeros_like(degree))
    normalised = sp.diags(inverse_sqrt) @ adjacency @ sp.diags(inverse_sqrt)
    coo = normalised.tocoo()
    indices = torch.tensor(np.vstack([coo.row, coo.col]), dtype=torch.long)
    values = torch.tensor(coo.data, dtype=torch.float32)
    return torch.sparse_coo_tensor(indices, values, (n, n), check_invariants=False).coalesce()


def reference_loss(model: ReferenceGraphModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """SELFRec's ``train`` body: BPR (+1e-5), the L2 term and, for XSimGCL, the cross-layer InfoNCE."""
    final, contrast = model(perturbed=model.kind == "xsimgcl")
    users, items = final[: model.num_users], final[model.num_users :]
    u, pos, neg = batch["user_id"], batch["item_id"], batch["neg_item_id"]
    user_rows, pos_rows, neg_rows = users[u], items[pos], items[neg]
    margin = (user_rows * pos_rows).sum(1) - (user_rows * neg_rows).sum(1)
    rec = -torch.log(1e-5 + torch.sigmoid(margin)).mean()
    if model.kind == "lightgcn":
        ego = model.embeddings
        rows = [ego[u], ego[model.num_users + pos], ego[model.num_users + neg]]
        return rec + 1e-4 * sum(row.pow(2).sum() for row in rows) / (2 * len(u))
    reg = XSIMGCL["reg_weight"] * (user_rows.norm() + pos_rows.norm()) / len(u)
    contrast_users, contrast_items = contrast[: model.num_users], contrast[model.num_users :]
    cl = info_nce(users, contrast_users, torch.unique(u)) + info_nce(items, contrast_items, torch.unique(pos))
    return rec + reg + XSIMGCL["cl_weight"] * cl


def info_nce(view_1: torch.Tensor, view_2: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
    """SELFRec ``util/loss_torch.InfoNCE``: cosine logits / τ, the positive on the diagonal, mean over anchors."""
    anchors, candidates = F.normalize(view_1[nodes], dim=1), F.normalize(view_2[nodes], dim=1)
    logits = anchors @ candidates.T / XSIMGCL["temperature"]
    return -torch.diag(F.log_softmax(logits, dim=1)).mean()


class ReferenceDCCF(torch.nn.Module):
    """HKUDS/DCCF ``model.py`` (``inference``, ``_adaptive_mask``) in plain PyTorch, from our model's initial state."""

    def __init__(self, data: InteractionData, initial: DCCF, n_layers: int) -> None:
        super().__init__()
        self.num_users, self.num_items, self.n_layers = data.num_users, data.num_items, n_layers
        self.embeddings = torch.nn.Parameter(initial.ego_embeddings().detach().clone())
        self.user_intent = torch.nn.Parameter(initial.user_intents.detach().clone())
        self.item_intent = torch.nn.Parameter(initial.item_intents.detach().clone())
        users, items = data.train[:, 0], data.train[:, 1] + data.num_users
        edges = torch.stack([torch.cat([users, items]), torch.cat([items, users])])  # all_h_list, all_t_list
        self.register_buffer("edges", edges, persistent=False)
        self.register_buffer("adjacency", reference_adjacency(data), persistent=False)

    def spmm(self, values: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """``torch_sparse.spmm(edges, values, n, n, E)``: the per-edge-valued sparse matrix times E [n, d]."""
        n = embeddings.shape[0]
        matrix = torch.sparse_coo_tensor(self.edges, values, (n, n), check_invariants=False)
        return torch.sparse.mm(matrix, embeddings)

    def adaptive_mask(self, source: torch.Tensor) -> torch.Tensor:
        """Row-normalised ``(cos(src_h, src_t) + 1) / 2`` [m] from the gathered head and tail rows."""
        head, tail = self.edges
        heads, tails = F.normalize(source.index_select(0, head)), F.normalize(source.index_select(0, tail))
        alpha = ((heads * tails).sum(dim=1) + 1) / 2
        row_sum = torch.zeros(source.shape[0], dtype=alpha.dtype, device=alpha.device).index_add(0, head, alpha)
        return row_sum.pow(-1).nan_to_num(0, 0, 0)[head] * alpha

    def forward(self, perturbed: bool = False) -> tuple[torch.Tensor, list[tuple[torch.Tensor, ...]]]:
        """Final ``E*`` [n, d] (sum of layers) and the per-layer views (Z, R, Hβ, Hγ); no noise (``perturbed``)."""
        layers, views = [self.embeddings], []
        for _ in range(self.n_layers):
            ego = layers[-1]
            graph = torch.sparse.mm(self.adjacency, ego)
            users, items = ego.split([self.num_users, self.num_items])
            intent = torch.cat(
                [
                    torch.softmax(users @ self.user_intent, dim=1) @ self.user_intent.T,
                    torch.softmax(items @ self.item_intent, dim=1) @ self.item_intent.T,
                ]
            )
            graph_masked = self.spmm(self.adaptive_mask(graph), ego)
            intent_masked = self.spmm(self.adaptive_mask(intent), ego)
            views.append((graph, intent, graph_masked, intent_masked))
            layers.append(graph + intent + graph_masked + intent_masked + ego)
        return torch.stack(layers).sum(dim=0), views


def reference_dccf_loss(model: ReferenceDCCF, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """HKUDS/DCCF ``forward`` + ``cal_ssl_loss``: BPR, L_emb (batch sum), L_cen and the per-layer InfoNCE terms."""
    final, views = model()
    u, pos, neg = batch["user_id"], batch["item_id"] + model.num_users, batch["neg_item_id"] + model.num_users
    margin = (final[u] * final[pos]).sum(1) - (final[u] * final[neg]).sum(1)
    bpr = F.softplus(-margin).mean()
    emb = DCCF_LOSS["emb_reg"] * sum(model.embeddings[rows].pow(2).sum() for rows in (u, pos, neg))
    cen = DCCF_LOSS["cen_reg"] * (model.user_intent.pow(2).sum() + model.item_intent.pow(2).sum())
    cl = 0.0
    for nodes in (torch.unique(u), torch.unique(pos)):
        for graph, *others in views:
            anchors = F.normalize(graph[nodes], dim=1)
            for view in others:
                scores = torch.exp(anchors @ F.normalize(view[nodes], dim=1).T / DCCF_LOSS["temperature"])
                cl = cl + torch.sum(-torch.log(scores.diagonal() / (scores.sum(1) + 1e-8) + 1e-8)) / len(nodes)
    return bpr + emb + cen + DCCF_LOSS["ssl_reg"] * cl


# ---------------------------------------------------------------------------------------------------- runners
def shared_setup(args, kind: str, data: InteractionData, device: torch.device):
    """Our model (seeded init), its initial embeddings and one epoch of triples on the device."""
    torch.manual_seed(0)
    options = {
        "lightgcn": {},
        "xsimgcl": {"eps": XSIMGCL["eps"], "cl_layer": XSIMGCL["cl_layer"]},
        "dccf": {"n_intents": DCCF_INTENTS},
    }[kind]
    model = MODELS[kind].from_data(data, embed_size=args.embed_size, n_layers=args.n_layers, **options)
    initial = model.ego_embeddings().detach().clone()
    sampling = {"mode": "user", "num_triples": len(data.train)} if kind == "dccf" else {}
    triples = TripleSampler.from_data(data, **sampling).sample(torch.Generator().manual_seed(0))
    batches = [
        {key: value[start : start + args.batch_size].to(device) for key, value in triples.items()}
        for start in range(0, len(triples["user_id"]), args.batch_size)
    ]
    return model, initial, batches[: args.max_steps] if args.max_steps else batches


Runner = tuple[Callable[[dict], None], np.ndarray, list[dict[str, torch.Tensor]]]  # step, clean final, batches


def reference_runner(args, kind, data, device) -> Runner:
    ours, initial, batches = shared_setup(args, kind, data, device)
    if kind == "dccf":
        model, loss = ReferenceDCCF(data, ours, args.n_layers).to(device), reference_dccf_loss
    else:
        model, loss = ReferenceGraphModel(data, initial, kind, args.n_layers).to(device), reference_loss
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(batch: dict[str, torch.Tensor]) -> None:
        loss(model, batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with torch.no_grad():
        clean = model(perturbed=False)[0].cpu().numpy()
    return step, clean, batches


def ours_runner(args, kind, data, device) -> Runner:
    model, _, batches = shared_setup(args, kind, data, device)
    config = GraphRecConfig(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=args.batch_size,
        use_cpu=device.type == "cpu",
        report_to="none",
        max_steps=1,
    )
    objective = {
        "lightgcn": lambda: BPRLoss(reg_weight=1e-4),
        "xsimgcl": lambda: XSimGCLLoss(**{key: XSIMGCL[key] for key in ("cl_weight", "temperature", "reg_weight")}),
        "dccf": lambda: DCCFLoss(**DCCF_LOSS),
    }[kind]()
    trainer = GraphRecTrainer(model, config, objective=objective)
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which this step bypasses

    def step(batch: dict[str, torch.Tensor]) -> None:
        trainer.training_step(trainer.model, batch)
        trainer.optimizer.step()
        trainer.model.zero_grad(set_to_none=True)

    with torch.no_grad():
        output = trainer.model(perturbed=False)
        clean = torch.cat([output.user_embeddings, output.item_embeddings]).cpu().numpy()
    return step, clean, batches


RUNNERS = {"reference": reference_runner, "ours": ours_runner}


def measure(args, contender: str, kind: str, data: InteractionData) -> dict[str, Any]:
    """Epoch time, triples/s and peak memory of one contender (and its clean propagation before training)."""
    helpers = load_module(HERE / "embeddings.py", "benchmark_embeddings")
    device = torch.device(args.device)
    memory = helpers.PeakMemory(device, isolated=isolation(args) == "fork")
    step, clean, batches = RUNNERS[contender](args, kind, data, device)
    for batch in batches[: args.warmup]:
        step(batch)
    timed = batches[args.warmup :] or batches
    helpers.synchronize(device)
    start = time.perf_counter()
    for batch in timed:
        step(batch)
    helpers.synchronize(device)
    seconds = time.perf_counter() - start
    peak = memory.peak()
    triples = sum(len(batch["user_id"]) for batch in timed)
    return {
        "contender": contender,
        "model": kind,
        "dataset": args.dataset,
        "device": args.device,
        "steps": len(timed),
        "epoch_s": round(seconds * len(batches) / len(timed), 4),
        "triples_per_s": round(triples / seconds, 1),
        "peak_memory_mib": None if peak is None else round(peak / 2**20, 1),
        "memory_method": memory.method,
        "clean_embeddings": clean,
    }


def isolation(args) -> str:
    return args.isolation or ("fork" if args.device == "cpu" else "none")


def run_contender(args, contender: str, kind: str, data: InteractionData) -> dict[str, Any]:
    if isolation(args) == "fork":
        helpers = load_module(HERE / "embeddings.py", "benchmark_embeddings")
        return helpers.run_isolated(measure, args, contender, kind, data)
    return measure(args, contender, kind, data)


def main(argv=None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    data = load_data(args.dataset)
    print(f"{args.dataset}: {data.num_users} users, {data.num_items} items, {len(data.train)} training pairs")
    print("| model | ref epoch s | ours epoch s | speed ours/ref | ref MiB | ours MiB | memory ours/ref |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    results = []
    for kind in args.models.split(","):
        reference, ours = (run_contender(args, name, kind, data) for name in RUNNERS)
        difference = float(np.abs(reference.pop("clean_embeddings") - ours.pop("clean_embeddings")).max())
        if difference > 1e-4:
            raise RuntimeError(f"{kind}: the reference and our clean propagation differ by {difference:.2e}.")
        speed = reference["epoch_s"] / ours["epoch_s"]
        memory = (
            ours["peak_memory_mib"] / reference["peak_memory_mib"]
            if ours["peak_memory_mib"] and reference["peak_memory_mib"]
            else float("nan")
        )
        for result in (reference, ours):
            result.update(max_abs_diff=difference, speed_ours_over_reference=round(speed, 3))
        results += [reference, ours]
        print(
            f"| {kind} | {reference['epoch_s']} | {ours['epoch_s']} | {speed:.2f} | {reference['peak_memory_mib']} | "
            f"{ours['peak_memory_mib']} | {memory:.2f} |"
        )
    if args.json:
        with args.json.open("a") as handle:
            handle.writelines(json.dumps(result) + "\n" for result in results)
    return results


if __name__ == "__main__":
    main()
