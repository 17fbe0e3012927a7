"""GraphRecTrainer: one propagation per step, epoch triples, checks, card, reload, and 2 ranks == 1 (gradients)."""

import pytest
import torch

from hf_contrastive.evaluation.recsys import FullRankingEvaluator
from hf_contrastive.models.graph_rec import DCCF, LightGCN, XSimGCL
from hf_contrastive.objectives.bpr import BPRLoss
from hf_contrastive.objectives.dccf import DCCFLoss
from hf_contrastive.objectives.xsimgcl import XSimGCLLoss
from hf_contrastive.trainers.graph_rec import EpochTriples, GraphRecConfig, GraphRecTrainer

from ..trainers.distributed_check import torchrun
from .graph_rec_worker import run, tiny_interactions


def config(tmp_path, **overrides) -> GraphRecConfig:
    values = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=16,
        max_steps=4,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    return GraphRecConfig(**{**values, **overrides})


def xsimgcl_trainer(tmp_path, evaluator=None, **overrides):
    torch.manual_seed(0)
    model = XSimGCL.from_data(tiny_interactions(), embed_size=8)
    return GraphRecTrainer(model, config(tmp_path, **overrides), objective=XSimGCLLoss(), evaluator=evaluator)


def test_each_step_runs_exactly_one_propagation(tmp_path, monkeypatch):
    trainer = xsimgcl_trainer(tmp_path)
    calls = []
    propagate = XSimGCL.propagate_layers
    monkeypatch.setattr(
        XSimGCL, "propagate_layers", lambda self, perturbed: calls.append(perturbed) or propagate(self, perturbed)
    )
    trainer.train()
    assert calls == [True] * 4  # one perturbed pass per step feeds BPR, the regulariser and the contrast
    assert {"loss_rec", "loss_reg", "loss_cl"} <= set(trainer.state.log_history[0])


def test_epoch_triples_redraw_negatives_outside_the_training_items(tmp_path):
    trainer = xsimgcl_trainer(tmp_path)
    triples = trainer.train_dataset
    data = tiny_interactions()
    train_keys = set((data.train[:, 0] * data.num_items + data.train[:, 1]).tolist())
    first = dict(triples.triples)
    triples.set_epoch(1)
    assert not torch.equal(first["neg_item_id"], triples.triples["neg_item_id"])
    for epoch_triples in (first, triples.triples):
        keys = epoch_triples["user_id"] * data.num_items + epoch_triples["neg_item_id"]
        assert not set(keys.tolist()) & train_keys
        positives = epoch_triples["user_id"] * data.num_items + epoch_triples["item_id"]
        assert sorted(positives.tolist()) == sorted(train_keys)  # interaction mode: every pair once per epoch
    batch = triples.__getitems__([0, 3])
    assert batch["user_id"].tolist() == [triples[0]["user_id"].item(), triples[3]["user_id"].item()]


def test_user_sampling_draws_the_configured_number_of_triples(tmp_path):
    trainer = xsimgcl_trainer(tmp_path, triple_sampling="user", triples_per_epoch=50)
    assert isinstance(trainer.train_dataset, EpochTriples) and len(trainer.train_dataset) == 50


def test_bad_configurations_are_refused_before_training(tmp_path):
    model = LightGCN.from_data(tiny_interactions(), embed_size=8)
    with pytest.raises(ValueError, match="'xsimgcl' objective needs a model of type"):
        GraphRecTrainer(model, config(tmp_path), objective=XSimGCLLoss())
    with pytest.raises(ValueError, match="'dccf' objective needs"):
        GraphRecTrainer(model, config(tmp_path), objective=DCCFLoss())
    with pytest.raises(TypeError, match="GraphRecConfig"):
        GraphRecTrainer(model, object())
    with pytest.raises(ValueError, match="triples_per_epoch applies"):
        config(tmp_path, triples_per_epoch=10)


def test_training_evaluates_full_ranking_writes_the_card_and_reloads(tmp_path):
    data = tiny_interactions()
    trainer = xsimgcl_trainer(
        tmp_path, evaluator=FullRankingEvaluator.from_data(data, ks=(5, 10)), eval_strategy="steps", eval_steps=4
    )
    trainer.train()
    assert "eval_test_recall@10" in trainer.state.log_history[-2]
    trainer.save_model()
    trainer.create_model_card(model_name="xsimgcl-tiny")
    card = (tmp_path / "out" / "README.md").read_text()
    assert "test_recall@10" in card and "xsimgcl" in card and "replicated on every rank" in card
    model = trainer.model.eval()
    reloaded = XSimGCL.from_pretrained(tmp_path / "out")
    users = torch.arange(data.num_users)
    assert torch.equal(reloaded.scores(users), model.scores(users))


@pytest.mark.parametrize("model_class, objective", [(LightGCN, BPRLoss()), (DCCF, DCCFLoss())])
def test_training_lowers_the_loss(tmp_path, model_class, objective):
    torch.manual_seed(0)
    model = model_class.from_data(
        tiny_interactions(), embed_size=8, **({"n_intents": 4} if model_class is DCCF else {})
    )
    trainer = GraphRecTrainer(model, config(tmp_path, max_steps=30, learning_rate=0.01), objective=objective)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert sum(losses[-5:]) < sum(losses[:5])


def test_two_processes_with_b_triples_match_one_process_with_2b(tmp_path):
    """Split triples, replicated propagation: losses and every gradient of 3 steps equal the single process's."""
    out_file = tmp_path / "ddp.pt"
    torchrun("tests.recsys.graph_rec_worker", str(out_file), "4")
    distributed, single = torch.load(out_file), run(8, str(tmp_path / "single"))
    for name, expected in single.items():
        got = distributed[name]
        assert got["world_size"] == 2 and expected["world_size"] == 1
        assert got["losses"] == pytest.approx(expected["losses"], rel=1e-6), name
        assert len(got["gradients"]) == len(expected["gradients"]) == 3
        for step, (grads, reference) in enumerate(zip(got["gradients"], expected["gradients"])):
            assert grads.keys() == reference.keys()
            for parameter in reference:
                torch.testing.assert_close(
                    grads[parameter], reference[parameter], atol=1e-6, rtol=1e-5, msg=f"{name} {step} {parameter}"
                )
