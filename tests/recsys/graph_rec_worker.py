"""Three GraphRecTrainer steps per objective; saves losses and gradients (2-process check of the split triples).

``torchrun --nproc_per_node 2 -m tests.recsys.graph_rec_worker OUT_FILE PER_DEVICE_BATCH`` runs each scenario with
the triples split over 2 gloo ranks; :func:`run` called in-process with the doubled batch is the reference.
"""

import os
import sys
import tempfile

import torch
from transformers import TrainerCallback, set_seed

from hf_contrastive.data.recsys import InteractionData
from hf_contrastive.models.graph_rec import DCCF, LightGCN, XSimGCL
from hf_contrastive.objectives.bpr import BPRLoss
from hf_contrastive.objectives.dccf import DCCFLoss
from hf_contrastive.objectives.xsimgcl import XSimGCLLoss
from hf_contrastive.trainers.graph_rec import GraphRecConfig, GraphRecTrainer

from ..trainers.distributed_check import worker_training_args

# name -> (model class, model options, objective); XSimGCL keeps its noise (every rank seeds torch alike).
SCENARIOS = {
    "lightgcn": (LightGCN, {}, lambda: BPRLoss(reg_weight=1e-2)),
    "xsimgcl": (XSimGCL, {"eps": 0.2}, lambda: XSimGCLLoss(cl_weight=0.5, temperature=0.2, reg_weight=1e-2)),
    "dccf": (DCCF, {"n_intents": 4}, lambda: DCCFLoss(temperature=0.5, emb_reg=1e-2, cen_reg=1e-2, ssl_reg=0.5)),
}


def tiny_interactions() -> InteractionData:
    """12 users x 15 items, 3-5 items per user, deterministic; one test item per user."""
    train = [(f"u{u}", f"i{(u * 4 + 7 * k) % 15}") for u in range(12) for k in range(3 + u % 3)]
    test = [(f"u{u}", f"i{(u * 4 + 10) % 15}") for u in range(12)]  # 7k = 10 (mod 15) has k = 10: never a train item
    return InteractionData.from_pairs(train, test)


class CaptureGradients(TrainerCallback):
    def __init__(self, model):
        self.model, self.steps = model, []

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.steps.append({n: p.grad.detach().clone() for n, p in self.model.named_parameters() if p.grad is not None})


def run(per_device_batch: int, output_dir: str) -> dict:
    data, results = tiny_interactions(), {}
    for name, (model_class, options, make_objective) in SCENARIOS.items():
        set_seed(0)
        model = model_class.from_data(data, embed_size=8, n_layers=2, **options)
        args = worker_training_args(GraphRecConfig, os.path.join(output_dir, name), per_device_batch)
        trainer = GraphRecTrainer(model, args, objective=make_objective())
        capture = CaptureGradients(model)
        trainer.add_callback(capture)
        trainer.train()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        results[name] = {"losses": losses, "gradients": capture.steps, "world_size": args.world_size}
    return results


if __name__ == "__main__":
    out_file, batch = sys.argv[1], int(sys.argv[2])
    with tempfile.TemporaryDirectory() as scratch:
        results = run(batch, scratch)
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save(results, out_file)
