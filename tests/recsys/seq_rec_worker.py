"""Three training steps of CL4SRec (SeqRecTrainer) and MCLRec (MCLRecTrainer); saves the losses and the gradients
of every optimizer step (2-process check of the split sequences).

``torchrun --nproc_per_node 2 -m tests.recsys.seq_rec_worker OUT_FILE PER_DEVICE_BATCH`` runs each scenario with the
sequences split over 2 gloo ranks; :func:`run` called in-process with the doubled batch is the reference.
"""

import os
import sys
import tempfile
from dataclasses import dataclass

import torch
from transformers import TrainerCallback

from hf_contrastive.models.seq_rec import SequenceAugmentation
from hf_contrastive.objectives.seq_rec import CL4SRecLoss, MCLRecLoss
from hf_contrastive.trainers.seq_rec import MCLRecTrainer, SeqRecConfig, SeqRecTrainer

from ..trainers.distributed_check import worker_training_args
from .test_mclrec_trainer import rows, tiny_model

# name -> (trainer class, model with augmenters, objective).
SCENARIOS = {
    "cl4srec": (SeqRecTrainer, False, lambda: CL4SRecLoss(weight=0.5)),
    "mclrec": (MCLRecTrainer, True, lambda: MCLRecLoss(view_weight=0.1, model_view_weight=0.4)),
}


@dataclass(frozen=True)
class HistorySeededAugmentation(SequenceAugmentation):
    """Crop / mask / reorder as usual, but each history's two views come from a generator seeded by the history.

    The trainer's collator draws from one generator seeded ``seed + process_index``, so rank 1's views differ from
    the views the single process draws for the same rows. Seeding per history makes the views a function of the
    row alone: identical whichever rank collates it and whatever else is in the batch.
    """

    def augment_pair(self, sequence, generator: torch.Generator) -> tuple[list[int], list[int]]:
        own_generator = torch.Generator().manual_seed(hash(tuple(sequence)) % 2**63)  # int hashes are not salted
        return super().augment_pair(sequence, own_generator)


class CaptureUpdateGradients(TrainerCallback):
    """Every parameter gradient before each optimizer step: the Trainer's and, for MCLRec, the augmenter optimizer's
    (3 updates per MCLRec step: encoder, augmenters, encoder)."""

    def __init__(self, trainer):
        self.trainer, self.updates = trainer, []

    def on_train_begin(self, args, state, control, **kwargs):
        optimizers = [self.trainer.optimizer, getattr(self.trainer, "augmenter_optimizer", None)]
        for optimizer in filter(None, optimizers):
            # The hook goes on the torch optimizer: accelerate's wrapper delegates its step to it.
            getattr(optimizer, "optimizer", optimizer).register_step_pre_hook(self._record)

    def _record(self, optimizer, args, kwargs):
        parameters = self.trainer.accelerator.unwrap_model(self.trainer.model).named_parameters()
        self.updates.append({n: p.grad.detach().clone() for n, p in parameters if p.grad is not None})


def run(per_device_batch: int, output_dir: str) -> dict:
    results = {}
    for name, (trainer_class, augmenters, make_objective) in SCENARIOS.items():
        # No dropout: each rank draws its own dropout masks, which no seeding can make equal to the single process's.
        model = tiny_model(augmenters=augmenters, dropout=0.0)
        args = worker_training_args(SeqRecConfig, os.path.join(output_dir, name), per_device_batch)
        args.augmentation = HistorySeededAugmentation()  # read by the trainer's default collator
        trainer = trainer_class(model, args, train_dataset=rows(), objective=make_objective())
        capture = CaptureUpdateGradients(trainer)
        trainer.add_callback(capture)
        trainer.train()
        # every training log: "loss" and the objective's terms (averaged over ranks), grad_norm, learning rate
        losses = [entry for entry in trainer.state.log_history if "loss" in entry]
        results[name] = {"losses": losses, "gradients": capture.updates, "world_size": args.world_size}
    return results


if __name__ == "__main__":
    out_file, batch = sys.argv[1], int(sys.argv[2])
    with tempfile.TemporaryDirectory() as scratch:
        results = run(batch, scratch)
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save(results, out_file)
