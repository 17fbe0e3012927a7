"""TrainerBookkeeping averages each objective log over the steps that logged it."""

import torch

from hf_contrastive.trainers.common import TrainerBookkeeping


class RecordingParent:
    def log(self, logs, start_time=None):
        self.logged = dict(logs)


class Bookkeeper(TrainerBookkeeping, RecordingParent):
    pass


def test_a_log_that_starts_mid_window_is_averaged_over_its_own_steps():
    keeper = Bookkeeper()
    keeper._init_bookkeeping()
    keeper._accumulate_logs({"loss_mse": torch.tensor(1.0)})
    keeper._accumulate_logs({"loss_mse": torch.tensor(3.0), "triplet": torch.tensor(0.5)})
    keeper.log({"loss": 2.0})
    assert keeper.logged == {"loss": 2.0, "loss_mse": 2.0, "triplet": 0.5}  # not 0.25
    keeper.log({"loss": 1.0})
    assert keeper.logged == {"loss": 1.0}  # the window was reset
