"""CMIMModel: posterior clamp, sampling, mean and informative embeddings, save/reload, training under the trainer."""

import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback

from hf_contrastive.data.multimodal import MultiModalCollator, stack_vectors
from hf_contrastive.models.cmim import CMIMConfig, CMIMModel
from hf_contrastive.objectives.cmim import CMIMLoss
from hf_contrastive.trainers.multimodal import MultiModalConfig, MultiModalTrainer

INPUT_DIM, HIDDEN, LATENT = 6, 8, 3


def tiny_model(seed: int = 0) -> CMIMModel:
    torch.manual_seed(seed)
    return CMIMModel(CMIMConfig(input_dim=INPUT_DIM, hidden_dim=HIDDEN, num_layers=2, latent_dim=LATENT))


def values(rows: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.rand(rows, INPUT_DIM, generator=torch.Generator().manual_seed(seed))


def test_eval_mode_uses_the_mean_and_training_mode_samples_around_it():
    model, x = tiny_model().eval(), values()
    output = model(x)
    assert torch.equal(output.z, output.mu)
    model.train()
    torch.manual_seed(3)
    first = model(x)
    torch.manual_seed(3)
    again = model(x)
    assert torch.equal(first.z, again.z) and not torch.allclose(first.z, first.mu)
    # z = mu + sigma * eps: the standardised residual is the eps drawn with the same seed.
    torch.manual_seed(3)
    eps = torch.randn_like(first.mu)
    torch.testing.assert_close((first.z - first.mu) / first.log_sigma.exp(), eps)


def test_log_sigma_is_clamped_and_the_loss_stays_finite():
    # Spec check 4: an encoder that outputs log sigma = -50 gives -6 and a finite loss.
    model = tiny_model().train()
    with torch.no_grad():
        model.posterior.weight[LATENT:] = 0.0
        model.posterior.bias[LATENT:] = -50.0
    x = values()
    embeddings = {f"x.{k}" if k != "embedding" else "x": v for k, v in model.embed_column("x", {"values": x}).items()}
    assert torch.equal(embeddings["x.log_sigma"], torch.full((5, LATENT), -6.0))
    loss = CMIMLoss()(embeddings, {"features": {"x": {"values": x}}}).loss
    assert torch.isfinite(loss)


def test_embed_column_yields_what_the_objective_reads():
    model = tiny_model().eval()
    outputs = model.embed_column("x", {"values": values()})
    assert set(outputs) == {"embedding", "mu", "log_sigma", "reconstruction"}
    assert outputs["embedding"].shape == (5, LATENT) and outputs["reconstruction"].shape == (5, INPUT_DIM)
    torch.testing.assert_close(outputs["embedding"], model.mean_embeddings(values()))


def test_informative_embeddings_are_the_mean_and_the_decoder_states_at_the_mean():
    # Spec check 8: deterministic (even in training mode: no sampling), shape d_z + H per layer.
    model, x = tiny_model().train(), values()
    embedding = model.informative_embeddings(x)
    assert embedding.shape == (5, LATENT + HIDDEN)
    torch.testing.assert_close(embedding, model.informative_embeddings(x))
    mu = model.mean_embeddings(x)
    last_state = model.decoder_layers[1](model.decoder_layers[0](mu))
    torch.testing.assert_close(embedding, torch.cat([mu, last_state], dim=-1))
    both = model.informative_embeddings(x, layers=(0, -1))
    assert both.shape == (5, LATENT + 2 * HIDDEN)
    torch.testing.assert_close(both[:, LATENT + HIDDEN :], last_state)


def test_save_and_reload_give_the_same_embeddings(tmp_path):
    model, x = tiny_model().eval(), values()
    model.save_pretrained(tmp_path)
    reloaded = CMIMModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.latent_dim == LATENT and reloaded.config.min_log_sigma == -6.0
    for method in ("mean_embeddings", "informative_embeddings"):
        torch.testing.assert_close(getattr(reloaded, method)(x), getattr(model, method)(x), rtol=0, atol=0)
    torch.testing.assert_close(reloaded(x).reconstruction, model(x).reconstruction, rtol=0, atol=0)


def test_bad_input_and_config_are_refused():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"values \[B, 6\]"):
        model(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="embeds vector columns"):
        model.embed_column("x", {"pixel_values": torch.zeros(2, 1, 2, 3)})
    with pytest.raises(ValueError, match="out of range"):
        model.informative_embeddings(values(), layers=(5,))
    with pytest.raises(ValueError, match="at least one"):
        model.informative_embeddings(values(), layers=())
    with pytest.raises(ValueError, match="needs input_dim"):
        CMIMModel(CMIMConfig())
    with pytest.raises(ValueError, match="latent_dim"):
        CMIMConfig(input_dim=4, latent_dim=0)


class CaptureGradients(TrainerCallback):
    def __init__(self, model):
        self.model, self.steps = model, []

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.steps.append({n: p.grad.clone() for n, p in self.model.named_parameters()})


def train_steps(tmp_path, **overrides) -> tuple[list[dict], list[float]]:
    model = tiny_model()
    rows = torch.rand(16, INPUT_DIM, generator=torch.Generator().manual_seed(0)).tolist()
    args = MultiModalConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        max_steps=2,
        learning_rate=1e-2,
        optim="sgd",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        **overrides,
    )
    trainer = MultiModalTrainer(
        model,
        args,
        train_dataset=Dataset.from_dict({"x": rows}),
        objective=CMIMLoss(likelihood="bernoulli", temperature=0.5),
        data_collator=MultiModalCollator({"x": stack_vectors}),
    )
    capture = CaptureGradients(model)
    trainer.add_callback(capture)
    trainer.train()
    return capture.steps, [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_gradient_cache_replays_the_sampled_noise(tmp_path):
    # The cached step embeds without graph, then re-embeds with the RNG state replayed: the same eps as the cached
    # latents, so the gradients of the plain step. (One mini-batch of 8 rows: smaller mini-batches draw eps in other
    # chunks, a different but equally valid sample.)
    plain, plain_losses = train_steps(tmp_path / "plain")
    cached, cached_losses = train_steps(tmp_path / "cached", gradient_cache=True, cache_row_budget=8)
    assert plain_losses == pytest.approx(cached_losses, rel=1e-5)
    for got, expected in zip(cached, plain):
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4, msg=name)


def test_trainer_refuses_a_dataset_without_the_column(tmp_path):
    args = MultiModalConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, per_device_train_batch_size=4)
    with pytest.raises(ValueError, match=r"missing \['x', 'x.mu'"):
        MultiModalTrainer(
            tiny_model(),
            args,
            train_dataset=Dataset.from_dict({"features": [[0.0] * INPUT_DIM] * 4}),
            objective=CMIMLoss(),
            data_collator=MultiModalCollator({"features": stack_vectors}),
        )
