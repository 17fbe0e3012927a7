"""MultiModalTrainer: training lowers the loss, save/reload, the temperature, PEFT, evaluators and start-up errors."""

import math

import pytest
import torch
from datasets import Dataset
from transformers import CLIPModel

from hf_contrastive.models.clip import clip_processor, image_embeddings, text_embeddings
from hf_contrastive.objectives.clip import CLIPLoss

from .helpers import CAPTIONS, random_images, tiny_clip, tiny_clip_processor, tiny_clip_tokenizer
from .multimodal_worker import MultiModalTrainer, assert_distributed_matches_single, clip_dataset, config


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_clip_tokenizer()


def trainer_for(tokenizer, tmp_path, dataset=None, model=None, **overrides):
    settings = {"per_device_train_batch_size": 8, "learning_rate": 3e-3, "optim": "adamw_torch", **overrides}
    args = config(str(tmp_path), **settings)
    return MultiModalTrainer(
        model if model is not None else tiny_clip(tokenizer),
        args,
        train_dataset=dataset if dataset is not None else clip_dataset(8),
        processing_class=tiny_clip_processor(tokenizer),
        objective=CLIPLoss(),
    )


def batch_loss(trainer) -> float:
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(8)]))
    with torch.no_grad():
        return trainer.compute_loss(trainer.model.eval(), batch).item()


def test_training_lowers_the_loss_on_a_fixed_batch(tokenizer, tmp_path):
    trainer = trainer_for(tokenizer, tmp_path, max_steps=15)
    before = batch_loss(trainer)
    trainer.train()
    assert batch_loss(trainer) < before - 0.3


def test_saved_model_reloads_with_identical_embeddings_and_the_trained_temperature(tokenizer, tmp_path):
    trainer = trainer_for(tokenizer, tmp_path, max_steps=4)
    initial_scale = trainer.objective.log_scale.item()
    assert initial_scale == pytest.approx(trainer.model.logit_scale.item())  # taken from the model
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    trained_scale = trainer.objective.log_scale.item()
    assert trained_scale != pytest.approx(initial_scale, abs=1e-5)
    reloaded = CLIPModel.from_pretrained(tmp_path / "saved").eval()
    assert reloaded.logit_scale.item() == pytest.approx(trained_scale)
    inputs = clip_processor(tokenizer, 16)(
        text=CAPTIONS[:3], images=random_images(3), return_tensors="pt", padding=True
    )
    model = trainer.model.eval()
    with torch.no_grad():
        for embed in (
            lambda m: image_embeddings(m, inputs["pixel_values"]),
            lambda m: text_embeddings(m, inputs["input_ids"], inputs["attention_mask"]),
        ):
            torch.testing.assert_close(embed(reloaded), embed(model))


def test_any_vision_and_text_backbone_pair_trains_reloads_and_gets_a_zero_shot_card(tokenizer, tmp_path):
    from transformers import BertConfig, VisionTextDualEncoderConfig, VisionTextDualEncoderModel, ViTConfig

    torch.manual_seed(0)
    tower = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    dual_config = VisionTextDualEncoderConfig.from_vision_text_configs(
        ViTConfig(image_size=16, patch_size=8, **tower),
        BertConfig(vocab_size=len(tokenizer), max_position_embeddings=32, **tower),
        projection_dim=8,
    )
    model = VisionTextDualEncoderModel(dual_config)
    initial = {name: value.clone() for name, value in model.state_dict().items()}
    trainer = trainer_for(tokenizer, tmp_path, model=model, max_steps=3)
    trainer.train()
    for tower_name in ("vision_model", "text_model", "visual_projection", "text_projection"):
        assert any(  # both towers and both projections were updated
            not torch.equal(value, initial[name])
            for name, value in model.state_dict().items()
            if name.startswith(tower_name)
        ), tower_name
    trainer.save_model(str(tmp_path / "saved"))
    reloaded = VisionTextDualEncoderModel.from_pretrained(tmp_path / "saved").eval()
    assert reloaded.logit_scale.item() == pytest.approx(trainer.objective.log_scale.item())
    pixels = tiny_clip_processor(tokenizer)(images=random_images(2), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        torch.testing.assert_close(image_embeddings(reloaded, pixels), image_embeddings(model.eval(), pixels))
    trainer.create_model_card(model_name="dual-encoder")
    card = (tmp_path / "README.md").read_text()
    assert "pipeline_tag: zero-shot-image-classification" in card
    assert "VisionTextDualEncoderModel.from_pretrained" in card and "sentence" not in card.lower()


def test_log_scale_is_clamped_after_each_step(tokenizer, tmp_path):
    trainer = trainer_for(tokenizer, tmp_path, max_steps=1)
    with torch.no_grad():
        trainer.objective.log_scale.fill_(7.0)
    trainer.train()
    assert trainer.objective.log_scale.item() == pytest.approx(math.log(100.0))


def test_lora_on_both_towers_trains_only_the_adapters(tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_clip(tokenizer), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = trainer_for(tokenizer, tmp_path, model=model, max_steps=3)
    trainer.train()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert any("vision_model" in n for n in changed) and any("text_model" in n for n in changed)


def test_evaluator_gets_an_embed_function_of_the_current_model(tokenizer, tmp_path):
    images = random_images(5)

    def evaluator(embed):
        return {
            "image_norm": embed("image", images).norm(dim=-1).mean().item(),
            "rows": len(embed("text", CAPTIONS[:7])),
        }

    trainer = trainer_for(tokenizer, tmp_path, per_device_eval_batch_size=2)
    trainer.evaluator = evaluator
    metrics = trainer.evaluate()
    expected = image_embeddings(trainer.model, trainer.data_collator.process("image", images)["pixel_values"])
    assert metrics["eval_rows"] == 7
    assert metrics["eval_image_norm"] == pytest.approx(expected.norm(dim=-1).mean().item(), rel=1e-5)


def test_missing_image_column_is_refused_before_training(tokenizer, tmp_path):
    dataset = Dataset.from_dict({"picture": random_images(8), "text": CAPTIONS[:8]})
    with pytest.raises(ValueError, match=r"reads the embeddings \['image', 'text'\].*missing \['image'\]"):
        trainer_for(tokenizer, tmp_path, dataset=dataset)


def test_column_the_objective_needs_but_the_dataset_lacks_is_refused(tokenizer, tmp_path):
    dataset = Dataset.from_dict({"image": random_images(8), "caption": CAPTIONS[:8]})
    with pytest.raises(ValueError, match=r"dataset columns \['image', 'caption'\]\): missing \['text'\]"):
        trainer_for(tokenizer, tmp_path, dataset=dataset)


def test_unreadable_image_path_is_refused_with_its_row(tokenizer, tmp_path):
    paths = []
    for index, image in enumerate(random_images(8)):
        paths.append(str(tmp_path / f"{index}.png"))
        image.save(paths[-1])
    paths[6] = str(tmp_path / "gone.png")
    dataset = Dataset.from_dict({"image": paths, "text": CAPTIONS[:8]})
    with pytest.raises(ValueError, match=r"Column 'image', row 6: the image file .*gone.png' does not exist"):
        trainer_for(tokenizer, tmp_path, dataset=dataset)


def test_wrong_image_size_is_refused(tokenizer, tmp_path):
    dataset = Dataset.from_dict({"image": random_images(7) + random_images(1, size=20), "text": CAPTIONS[:8]})
    with pytest.raises(ValueError, match=r"Column 'image', row 7: the image is 20x20 pixels but 16x16"):
        trainer_for(tokenizer, tmp_path, dataset=dataset, image_size=16)
    model = tiny_clip(tokenizer)
    args = config(str(tmp_path), per_device_train_batch_size=8)
    with pytest.raises(
        ValueError, match=r"Column 'image' \(training\): the processor makes 20x20 images but the model"
    ):
        MultiModalTrainer(
            model, args, clip_dataset(8), processing_class=clip_processor(tokenizer, 20), objective=CLIPLoss()
        )


def test_gradient_cache_is_refused_for_an_objective_that_cannot_run_cached(tokenizer, tmp_path):
    objective = CLIPLoss()
    objective.supports_gradient_cache = False
    args = config(str(tmp_path), gradient_cache=True)
    with pytest.raises(ValueError, match="cannot run under the gradient cache"):
        MultiModalTrainer(
            tiny_clip(tokenizer),
            args,
            clip_dataset(8),
            processing_class=tiny_clip_processor(tokenizer),
            objective=objective,
        )


def test_vector_towers_match_across_two_processes(tmp_path, tokenizer):
    scenario = {
        "objective": "hf_contrastive.objectives.clip:CLIPLoss",
        "options": {"image_column": "a", "text_column": "b"},
        "dataset": "vectors",
        "modes": ["cached"],
    }
    assert_distributed_matches_single(tmp_path, tokenizer, scenario)
