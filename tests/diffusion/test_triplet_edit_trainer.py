"""TripletEditTrainer on a tiny InstructPix2Pix pipeline: the step against a hand computation, the batched call,
gradients, the global start step, saving / reloading / resuming, and bad input refused before training."""

import os

import pytest
import torch
import torch.nn.functional as F
from diffusers import StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel

from hf_contrastive.data.editing import EDITING_COLUMNS
from hf_contrastive.objectives.superedit import per_sample_distance
from hf_contrastive.trainers.triplet_edit import TripletEditConfig, TripletEditTrainer

from .helpers import RESOLUTION, editing_rows, random_image, tiny_pipeline


def make_args(tmp_path, **overrides):
    settings = {
        "output_dir": str(tmp_path / "out"),
        "resolution": RESOLUTION,
        "per_device_train_batch_size": 4,
        "max_steps": 2,
        "report_to": [],
        "use_cpu": True,
        "save_strategy": "no",
        "disable_tqdm": True,
        "use_ema": False,
        "seed": 0,
        **overrides,
    }
    return TripletEditConfig(**settings)


def make_trainer(tmp_path, pipeline=None, rows=None, validation_rows=None, **overrides):
    rows = editing_rows(4) if rows is None else rows
    args = make_args(tmp_path, **overrides)
    return TripletEditTrainer(pipeline or tiny_pipeline(), args, train_dataset=rows, validation_rows=validation_rows)


def batch_of(trainer, count=4):
    return trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(count)]))


def reference_loss(trainer, inputs, seed, weight, margin):
    """The diffusers InstructPix2Pix step + SuperEdit's term, written out with two separate UNet calls."""
    unet, vae, text_encoder, scheduler = trainer.model, trainer.vae, trainer.text_encoder, trainer.noise_scheduler
    p = trainer.args.conditioning_dropout_prob
    torch.manual_seed(seed)
    with torch.no_grad():
        latents = vae.encode(inputs["edited_pixel_values"]).latent_dist.sample() * vae.config.scaling_factor
        original = vae.encode(inputs["original_pixel_values"]).latent_dist.mode()
        text = text_encoder(inputs["input_ids"])[0]
        negative_text = text_encoder(inputs["neg_input_ids"])[0]
        null = text_encoder(trainer.data_collator.tokenize([""]))[0]
    noise = torch.randn_like(latents)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),)).long()
    noisy = scheduler.add_noise(latents, noise, timesteps)
    random_p = torch.rand(len(latents))
    prompt_mask = (random_p < 2 * p).reshape(-1, 1, 1)
    text, negative_text = (torch.where(prompt_mask, null, t) for t in (text, negative_text))
    image_mask = 1 - ((random_p >= p).float() * (random_p < 3 * p).float())
    unet_input = torch.cat([noisy, image_mask.reshape(-1, 1, 1, 1) * original], dim=1)
    if scheduler.config.prediction_type == "epsilon":
        target = noise
    else:
        target = scheduler.get_velocity(latents, noise, timesteps)
    positive = unet(unet_input, timesteps, text).sample
    loss = F.mse_loss(positive.float(), target.float(), reduction="mean")
    if weight == 0:
        return loss
    negative = unet(unet_input, timesteps, negative_text).sample
    d_pos = ((positive - target) ** 2).mean(dim=(1, 2, 3))
    d_neg = ((negative - target) ** 2).mean(dim=(1, 2, 3))
    mask = 1 - (random_p < p).float()  # text dropped and image kept (r < p) leave the term
    return loss + weight * (torch.relu(d_pos - d_neg + margin) * mask).sum() / (mask.sum() + 1e-8)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_step_equals_the_hand_written_instruct_pix2pix_step_plus_triplet(tmp_path, prediction_type):
    rows = editing_rows(8)
    trainer = make_trainer(
        tmp_path,
        tiny_pipeline(prediction_type),
        rows,
        triplet_loss_start_step=0,
        triplet_loss_margin=0.05,
        triplet_loss_weight=2.0,
        conditioning_dropout_prob=0.2,  # at seed 1: text-only, both and image-only drops among the 8 samples
    )
    inputs = batch_of(trainer, 8)
    torch.manual_seed(1)
    loss = trainer.compute_loss(trainer.model, inputs)
    expected = reference_loss(trainer, inputs, seed=1, weight=2.0, margin=0.05)
    assert torch.allclose(loss, expected, atol=1e-6, rtol=1e-5)
    assert trainer.prediction_type == prediction_type


def test_before_the_start_step_the_loss_is_instruct_pix2pix_bit_for_bit(tmp_path):
    trainer = make_trainer(tmp_path, triplet_loss_start_step=5)
    inputs = batch_of(trainer)
    torch.manual_seed(3)
    loss = trainer.compute_loss(trainer.model, inputs)
    assert torch.equal(loss, reference_loss(trainer, inputs, seed=3, weight=0.0, margin=0.0))


def test_one_batched_unet_call_equals_two_separate_calls(tmp_path):
    trainer = make_trainer(tmp_path)
    unet = trainer.model.eval()
    torch.manual_seed(0)
    unet_input, timesteps = torch.randn(3, 8, 4, 4), torch.tensor([1, 500, 999])
    text_positive, text_negative = torch.randn(3, 32, 32), torch.randn(3, 32, 32)
    with torch.no_grad():
        batched = trainer.predict_noise(unet, unet_input, timesteps, text_positive, text_negative)
        separate = [unet(unet_input, timesteps, text).sample for text in (text_positive, text_negative)]
    assert torch.allclose(batched["positive"], separate[0], atol=1e-6)
    assert torch.allclose(batched["negative"], separate[1], atol=1e-6)


def test_gradients_reach_the_unet_from_both_terms(tmp_path):
    trainer = make_trainer(tmp_path, triplet_loss_start_step=0, conditioning_dropout_prob=0.0)
    unet, objective = trainer.model, trainer.objective
    torch.manual_seed(0)
    unet_input, timesteps = torch.randn(2, 8, 4, 4), torch.tensor([10, 700])
    text_positive, text_negative, target = torch.randn(2, 32, 32), torch.randn(2, 32, 32), torch.randn(2, 4, 4, 4)
    predictions = trainer.predict_noise(unet, unet_input, timesteps, text_positive, text_negative)
    mse = F.mse_loss(predictions["positive"], target)
    d_neg = per_sample_distance(predictions["negative"], target)
    parameters = [p for p in unet.parameters() if p.requires_grad]
    mse_grads = torch.autograd.grad(mse, parameters, retain_graph=True, allow_unused=True)
    negative_grads = torch.autograd.grad(-d_neg.mean(), parameters, allow_unused=True)
    assert sum(g.abs().sum() for g in mse_grads if g is not None) > 0
    assert sum(g.abs().sum() for g in negative_grads if g is not None) > 0
    # The objective's total gradient is the sum of both terms' (margin large: every sample active).
    objective.margin = 10.0
    predictions = trainer.predict_noise(unet, unet_input, timesteps, text_positive, text_negative)
    batch = {"target": target, "triplet_mask": torch.ones(2), "step": 0}
    total = torch.autograd.grad(objective(predictions, batch).loss, parameters, allow_unused=True)
    d_pos_grads = torch.autograd.grad(
        per_sample_distance(
            trainer.predict_noise(unet, unet_input, timesteps, text_positive, None)["positive"], target
        ).mean(),
        parameters,
        allow_unused=True,
    )
    for t, m, n, p in zip(total, mse_grads, negative_grads, d_pos_grads):
        if t is not None:
            assert torch.allclose(t, m + n + p, atol=1e-6)


def test_start_step_counts_global_steps_not_steps_within_the_epoch(tmp_path):
    logs = {}
    for counter in ("global", "epoch_local"):
        trainer = make_trainer(
            tmp_path / counter,
            per_device_train_batch_size=2,  # 4 rows: 2 steps per epoch
            max_steps=4,
            logging_steps=1,
            triplet_loss_start_step=2,
            start_step_counter=counter,
        )
        trainer.train()
        logs[counter] = [entry for entry in trainer.state.log_history if "mse_loss" in entry]
    # Steps are logged after they ran: the step at global step 2 is logged as step 3.
    assert [("triplet_loss" in entry) for entry in logs["global"]] == [False, False, True, True]
    assert all("triplet_loss" not in entry for entry in logs["epoch_local"])


def test_save_reload_card_and_resume(tmp_path):
    rows = editing_rows(4)
    settings = {
        "use_ema": True,
        "max_steps": 2,
        "save_strategy": "steps",
        "save_steps": 1,
        "triplet_loss_start_step": 0,
    }
    validation = [{"input_image": rows[0]["input_image"], "edit_prompt": "make it blue"}]
    trainer = make_trainer(
        tmp_path,
        rows=rows,
        validation_rows=validation,
        activation_checkpointing=True,
        validation_steps=2,
        validation_inference_steps=2,
        **settings,
    )
    assert trainer.model.is_gradient_checkpointing
    trainer.train()
    output_dir = trainer.args.output_dir
    trainer.save_model()
    trainer.create_model_card(dataset_name="local/shapes")

    reloaded = StableDiffusionInstructPix2PixPipeline.from_pretrained(output_dir)
    for saved, shadow in zip(reloaded.unet.parameters(), trainer.ema.shadow_params):
        assert torch.equal(saved, shadow)  # the final folder holds the EMA weights
    assert not all(torch.equal(a, b) for a, b in zip(reloaded.unet.parameters(), trainer.model.parameters()))
    edited = reloaded(
        "make it blue", image=random_image(0), num_inference_steps=2, generator=torch.Generator().manual_seed(0)
    ).images[0]
    assert edited.size == (RESOLUTION, RESOLUTION)

    checkpoint = os.path.join(output_dir, "checkpoint-1")
    assert os.path.isdir(os.path.join(checkpoint, "unet_ema"))
    card = open(os.path.join(output_dir, "README.md")).read()
    for expected in (
        "superedit",
        "image-to-image",
        "local/shapes",
        "Triplet margin / weight",
        "0.0005 / 1.0",
        "StableDiffusionInstructPix2PixPipeline.from_pretrained",
        "samples/0_edit.png",
        "arxiv:2505.02370",
    ):
        assert expected in card
    assert os.path.isfile(os.path.join(output_dir, "samples", "0_edit.png"))
    assert os.path.isfile(os.path.join(output_dir, "validation", "step-2", "0.png"))

    resumed = make_trainer(tmp_path / "resumed", rows=rows, **settings)
    resumed.train(resume_from_checkpoint=checkpoint)
    for a, b in zip(resumed.model.parameters(), trainer.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    for a, b in zip(resumed.ema.shadow_params, trainer.ema.shadow_params):
        assert torch.allclose(a, b, atol=1e-6)
    assert resumed.ema.optimization_step == trainer.ema.optimization_step == 2


def test_bf16_keeps_the_pipeline_modules_at_full_precision(tmp_path):
    pipeline = tiny_pipeline()
    trainer = make_trainer(tmp_path, pipeline, bf16=True, max_steps=1, triplet_loss_start_step=0)
    trainer.train()
    assert trainer.vae.dtype == trainer.text_encoder.dtype == torch.bfloat16
    assert pipeline.vae.dtype == pipeline.text_encoder.dtype == trainer.model.dtype == torch.float32
    assert torch.isfinite(torch.tensor(trainer.state.log_history[-1]["train_loss"]))


def _rows_with(column, value, row=1):
    """Three good rows (a list of dicts: a Dataset column cannot mix paths and images) with one value replaced."""
    rows = [dict(zip(EDITING_COLUMNS, values)) for values in zip(*(editing_rows(3)[c] for c in EDITING_COLUMNS))]
    rows[row][column] = value
    return rows


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (_rows_with("input_image", "/no/such/image.png"), "'input_image', row 1: the image file"),
        (_rows_with("edited_image", random_image(0, mode="RGBA")), "'edited_image', row 1: the image has mode 'RGBA'"),
        (_rows_with("input_image", random_image(0, size=16)), "'input_image', row 1: the image is 16x16"),
        (_rows_with("negative_prompts", []), "'negative_prompts', row 1: the list of wrong instructions is empty"),
    ],
)
def test_bad_rows_are_refused_before_training(tmp_path, rows, message):
    with pytest.raises(ValueError, match=message):
        make_trainer(tmp_path, rows=rows)


def test_bad_setups_are_refused(tmp_path):
    pipeline = tiny_pipeline()
    config = dict(pipeline.unet.config)
    config["in_channels"] = 4
    pipeline.unet = UNet2DConditionModel.from_config(config)
    with pytest.raises(ValueError, match="takes 4 input channels; InstructPix2Pix needs 8"):
        make_trainer(tmp_path, pipeline)
    with pytest.raises(ValueError, match="needs bitsandbytes"):
        make_args(tmp_path, optim="adamw_bnb_8bit")
    with pytest.raises(ValueError, match="start_step_counter"):
        make_args(tmp_path, start_step_counter="epoch")
    with pytest.raises(ValueError, match="conditioning_dropout_prob"):
        make_args(tmp_path, conditioning_dropout_prob=0.5)
