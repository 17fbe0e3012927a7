"""SeqRecTrainer (SASRec, CL4SRec, MCLRec joint) and MCLRecTrainer (the three-update meta step)."""

import copy

import datasets
import pytest
import torch

from hf_contrastive.evaluation.recsys import LeaveOneOutEvaluator
from hf_contrastive.models.seq_rec import SASRec, SASRecConfig, SequenceAugmentation
from hf_contrastive.objectives.seq_rec import CL4SRecLoss, MCLRecLoss
from hf_contrastive.trainers.seq_rec import (
    AUGMENTER_OPTIMIZER_FILE,
    MCLRecTrainer,
    SeqRecCollator,
    SeqRecConfig,
    SeqRecTrainer,
)

NUM_ITEMS = 10
SEQUENCES = [[1 + (user + i) % 9 for i in range(3 + user % 4)] for user in range(32)]


def rows() -> datasets.Dataset:
    return datasets.Dataset.from_dict({"item_seq": [s[:-1] for s in SEQUENCES], "target": [s[-1] for s in SEQUENCES]})


def tiny_model(augmenters: bool = True, dropout: float = 0.0, seed: int = 0) -> SASRec:
    torch.manual_seed(seed)
    config = SASRecConfig(
        num_items=NUM_ITEMS,
        hidden_size=16,
        num_heads=2,
        intermediate_size=32,
        max_seq_len=8,
        hidden_dropout=dropout,
        attention_dropout=dropout,
        model_augmenters=augmenters,
        augmenter_widths=[8, 4],
    )
    return SASRec(config)


def config(tmp_path, **overrides) -> SeqRecConfig:
    options = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        max_steps=3,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    return SeqRecConfig(**{**options, **overrides})


def augmented_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    collator = SeqRecCollator(max_seq_len=8, augmentation=SequenceAugmentation(), seed=seed)
    return collator([{"item_seq": s[:-1], "target": s[-1]} for s in SEQUENCES[:8]])


def snapshot(parameters) -> list[torch.Tensor]:
    return [p.detach().clone() for p in parameters]


def same(before, parameters) -> bool:
    return all(torch.equal(a, p) for a, p in zip(before, parameters))


# ----------------------------------------------------------------------------------------------- MCLRec meta step
def test_meta_step_updates_encoder_then_augmenters_then_encoder(tmp_path):
    model = tiny_model(dropout=0.5)
    trainer = MCLRecTrainer(model, config(tmp_path), train_dataset=rows(), objective=MCLRecLoss())
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # train() sets it; these tests call one training_step
    encoder, augmenters = model.encoder_parameters(), model.augmenter_parameters()
    updates, saved = [], {}

    def before(name):
        return lambda optimizer, args, kwargs: saved.update(encoder=snapshot(encoder), aug=snapshot(augmenters))

    def after(name):
        def record(optimizer, args, kwargs):
            updates.append((name, not same(saved["encoder"], encoder), not same(saved["aug"], augmenters)))

        return record

    for name, optimizer in (("encoder", trainer.optimizer), ("augmenters", trainer.augmenter_optimizer)):
        optimizer.register_step_pre_hook(before(name))
        optimizer.register_step_post_hook(after(name))
    trainer.training_step(model, augmented_batch())
    trainer.optimizer.step()  # step 3: the Trainer steps its optimizer after training_step
    # (optimizer, encoder changed, augmenters changed): the frozen side is bit-identical after each update.
    assert updates == [("encoder", True, False), ("augmenters", False, True), ("encoder", True, False)]


def test_meta_step_equals_the_three_updates_written_out(tmp_path):
    model = tiny_model()  # no dropout: the re-encodings are deterministic
    reference = copy.deepcopy(model)
    objective = MCLRecLoss(view_weight=0.1, model_view_weight=0.4)
    trainer = MCLRecTrainer(model, config(tmp_path), train_dataset=rows(), objective=objective)
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # train() sets it; these tests call one training_step
    batch = augmented_batch()
    trainer.training_step(model, batch)
    trainer.optimizer.step()

    def adam(parameters):
        return torch.optim.AdamW(parameters, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    encoder_optimizer = adam(reference.encoder_parameters())
    augmenter_optimizer = adam(reference.augmenter_parameters())
    unlabeled = {k: v for k, v in batch.items() if k != "labels"}

    def encoder_loss():
        outputs = reference(**batch)
        return outputs.loss + objective(SeqRecTrainer.view_embeddings(outputs), batch).loss

    for loss_fn, optimizer in (
        (encoder_loss, encoder_optimizer),  # 1: theta with phi fixed
        (
            lambda: objective.augmenter_loss(SeqRecTrainer.view_embeddings(reference(**unlabeled))).loss,
            augmenter_optimizer,
        ),  # 2: phi through the updated theta'
        (encoder_loss, encoder_optimizer),  # 3: theta again with phi'
    ):
        reference.zero_grad()
        loss_fn().backward()
        optimizer.step()
    for (name, trained), expected in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(trained, expected, msg=name)


def test_mclrec_trains_evaluates_and_writes_a_card(tmp_path):
    evaluator = LeaveOneOutEvaluator(
        [s[:-1] for s in SEQUENCES], [s[-1] for s in SEQUENCES], NUM_ITEMS, ks=(5,), name="valid"
    )
    args = config(tmp_path, logging_steps=1, eval_strategy="steps", eval_steps=3)
    trainer = MCLRecTrainer(
        tiny_model(dropout=0.5), args, train_dataset=rows(), objective=MCLRecLoss(), evaluator=evaluator
    )
    trainer.train()
    logged = {key for entry in trainer.state.log_history for key in entry}
    assert {"rec_loss", "cl1", "cl2", "reg", "augmenter_cl2", "eval_valid_hr@5", "eval_valid_ndcg@5"} <= logged
    for entry in (e for e in trainer.state.log_history if "rec_loss" in e):  # the terms are per-step values
        total = entry["rec_loss"] + 0.1 * entry["cl1"] + 0.1 * (entry["cl2"] + 0.1 * entry["reg"])
        assert entry["loss"] == pytest.approx(total, abs=1e-3)
    trainer.create_model_card()
    card = (tmp_path / "README.md").read_text()
    assert "mclrec" in card and "valid_hr@5" in card and "arxiv:2304.07763" in card


def test_augmenter_optimizer_is_saved_and_restored_with_checkpoints(tmp_path):
    args = config(tmp_path, max_steps=2, save_strategy="steps", save_steps=2)
    MCLRecTrainer(tiny_model(), args, train_dataset=rows(), objective=MCLRecLoss()).train()
    checkpoint = tmp_path / "checkpoint-2"
    assert (checkpoint / AUGMENTER_OPTIMIZER_FILE).exists()
    resumed = MCLRecTrainer(tiny_model(), config(tmp_path, max_steps=3), train_dataset=rows(), objective=MCLRecLoss())
    resumed.train(resume_from_checkpoint=str(checkpoint))
    steps = {float(state["step"]) for state in resumed.augmenter_optimizer.state.values()}
    assert steps == {3.0}  # two saved steps + one after resuming


# ----------------------------------------------------------------------------------------------- SeqRecTrainer
def test_cl4srec_loss_is_next_item_ce_plus_weighted_view_contrast(tmp_path):
    model = tiny_model(augmenters=False).eval()
    objective = CL4SRecLoss(weight=0.3)
    trainer = SeqRecTrainer(model, config(tmp_path), train_dataset=rows(), objective=objective)
    batch = augmented_batch()
    outputs = model(**batch)
    expected = (
        outputs.loss
        + 0.3
        * objective({"view_1": outputs.view_embeddings[0], "view_2": outputs.view_embeddings[1]}, batch).logs[
            "cl_loss"
        ]
    )
    torch.testing.assert_close(trainer.compute_loss(model, batch), expected)


def test_sasrec_baseline_learns_a_next_item_rule_and_joint_mclrec_updates_everything(tmp_path):
    # Every history ends with item i and is followed by i % 9 + 1: a perfect model has HR@1 = 1.
    evaluator = LeaveOneOutEvaluator([s[:-1] for s in SEQUENCES], [s[-1] for s in SEQUENCES], NUM_ITEMS, ks=(1,))
    args = config(tmp_path / "sasrec", max_steps=120, learning_rate=3e-3)
    baseline = SeqRecTrainer(tiny_model(augmenters=False), args, train_dataset=rows(), evaluator=evaluator)
    assert "aug_seq_1" not in baseline.data_collator([{"item_seq": [1, 2], "target": 3}])
    assert baseline.evaluate()["eval_test_hr@1"] < 0.5
    baseline.train()
    assert baseline.evaluate()["eval_test_hr@1"] == 1.0
    model = tiny_model()
    encoder, augmenters = snapshot(model.encoder_parameters()), snapshot(model.augmenter_parameters())
    SeqRecTrainer(model, config(tmp_path / "joint", max_steps=1), train_dataset=rows(), objective=MCLRecLoss()).train()
    assert not same(encoder, model.encoder_parameters()) and not same(augmenters, model.augmenter_parameters())


# ----------------------------------------------------------------------------------------------- bad input
def test_bad_rows_are_refused_before_training(tmp_path):
    def trainer_on(data):
        return SeqRecTrainer(
            tiny_model(augmenters=False), config(tmp_path), train_dataset=datasets.Dataset.from_dict(data)
        )

    with pytest.raises(ValueError, match="'item_seq' is empty"):
        trainer_on({"item_seq": [[1, 2], []], "target": [3, 4]})
    with pytest.raises(ValueError, match=r"row 1: .*outside 1..10"):
        trainer_on({"item_seq": [[1, 2], [11]], "target": [3, 4]})
    with pytest.raises(ValueError, match=r"outside 1..10"):
        trainer_on({"item_seq": [[1, 2]], "target": [0]})
    with pytest.raises(ValueError, match="needs a 'target' column"):
        trainer_on({"item_seq": [[1, 2]], "next": [3]})


def test_bad_configurations_are_refused(tmp_path):
    with pytest.raises(ValueError, match="gradient_accumulation_steps=1"):
        MCLRecTrainer(tiny_model(), config(tmp_path, gradient_accumulation_steps=2), objective=MCLRecLoss())
    with pytest.raises(ValueError, match="max_grad_norm=0"):
        MCLRecTrainer(tiny_model(), config(tmp_path, max_grad_norm=1.0), objective=MCLRecLoss())
    with pytest.raises(ValueError, match="needs the 'mclrec' objective"):
        MCLRecTrainer(tiny_model(augmenters=False), config(tmp_path))
    with pytest.raises(ValueError, match="needs model augmenters"):
        SeqRecTrainer(tiny_model(augmenters=False), config(tmp_path), objective=MCLRecLoss())
    with pytest.raises(ValueError, match="does not use model augmenters"):
        SeqRecTrainer(tiny_model(), config(tmp_path), objective=CL4SRecLoss())
    with pytest.raises(ValueError, match="objective_options"):
        SeqRecTrainer(tiny_model(augmenters=False), config(tmp_path, objective_options={"weight": 1.0}))
    with pytest.raises(TypeError, match="SeqRecConfig"):
        SeqRecTrainer(tiny_model(augmenters=False), object())
