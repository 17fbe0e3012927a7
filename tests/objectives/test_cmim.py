"""cMIM: the spec's correctness checks (section 8) on hand cases, the MIM / VAE limits, gradients, 2 processes."""

import math

import pytest
import torch
import torch.nn.functional as F

from hf_contrastive.objectives.base import ContrastiveObjective
from hf_contrastive.objectives.cmim import CMIMLoss, gaussian_log_density

LOG_2PI = math.log(2 * math.pi)


def latent_batch(rows=5, latent=3, features=4, seed=0, dtype=torch.float64):
    """Embeddings and batch as the trainer hands them over: z sampled from (mu, sigma), a decoder output, targets."""
    generator = torch.Generator().manual_seed(seed)
    mu = torch.randn(rows, latent, generator=generator, dtype=dtype)
    log_sigma = 0.3 * torch.randn(rows, latent, generator=generator, dtype=dtype) - 0.5
    z = mu + log_sigma.exp() * torch.randn(rows, latent, generator=generator, dtype=dtype)
    reconstruction = torch.randn(rows, features, generator=generator, dtype=dtype)
    targets = torch.rand(rows, features, generator=generator, dtype=dtype)
    embeddings = {"x": z, "x.mu": mu, "x.log_sigma": log_sigma, "x.reconstruction": reconstruction}
    return embeddings, {"features": {"x": {"values": targets}}}


def contrastive(z, **options):
    return CMIMLoss(**options).contrastive_term(torch.as_tensor(z, dtype=torch.float64))


# ------------------------------------------------------------------------------------------------ latent terms
def test_log_density_equals_torch_normal():
    # Spec check 1.
    embeddings, _ = latent_batch()
    z, mu, log_sigma = embeddings["x"], embeddings["x.mu"], embeddings["x.log_sigma"]
    expected = torch.distributions.Normal(mu, log_sigma.exp()).log_prob(z).sum(-1)
    torch.testing.assert_close(gaussian_log_density(z, mu, log_sigma), expected, atol=1e-6, rtol=0)


def sampled_latent_term(loss, mu, sigma, samples=400_000, seed=0):
    """The latent term of one latent dimension at z = mu + sigma * eps for ``samples`` draws of eps: [samples]."""
    log_sigma = torch.full((samples, 1), math.log(sigma), dtype=torch.float64, requires_grad=True)
    eps = torch.randn(samples, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    mean = torch.full((samples, 1), mu, dtype=torch.float64)
    return loss.latent_term(mean + log_sigma.exp() * eps, mean, log_sigma), log_sigma


def test_amim_latent_term_has_the_closed_form_expectation():
    # Spec check 2: E[-1/2 (log P(z) + log q(z|x))] = 1/4 (mu^2 + sigma^2 + log 2pi) + 1/4 (log 2pi + 1 + log sigma^2).
    mu, sigma = 0.3, 0.5
    closed_form = 0.25 * (mu**2 + sigma**2 + LOG_2PI) + 0.25 * (LOG_2PI + 1 + math.log(sigma**2))
    assert closed_form == pytest.approx(0.90736, abs=1e-5)
    values, _ = sampled_latent_term(CMIMLoss(), mu, sigma)
    assert values.mean().item() == pytest.approx(closed_form, rel=2e-3)


@pytest.mark.parametrize("sigma", [0.05, 0.3, 0.8])
def test_amim_rewards_a_shrinking_sigma_and_the_vae_does_not(sigma):
    # Spec check 3: d/d log sigma of the expected A-MIM term is 1/2 sigma^2 + 1/2 > 0; of the VAE KL, sigma^2 - 1 < 0.
    for latent_loss, expected in (("amim", 0.5 * sigma**2 + 0.5), ("vae", sigma**2 - 1)):
        values, log_sigma = sampled_latent_term(CMIMLoss(latent_loss=latent_loss), 0.3, sigma, samples=200_000)
        values.sum().backward()
        gradient = log_sigma.grad.mean().item()
        assert gradient == pytest.approx(expected, abs=5e-3)
        assert (gradient > 0) == (latent_loss == "amim")


def test_vae_latent_term_is_the_analytic_kl():
    embeddings, _ = latent_batch()
    mu, log_sigma = embeddings["x.mu"], embeddings["x.log_sigma"]
    posterior = torch.distributions.Normal(mu, log_sigma.exp())
    prior = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(posterior, prior).sum(-1)
    got = CMIMLoss(latent_loss="vae").latent_term(embeddings["x"], mu, log_sigma)
    torch.testing.assert_close(got, expected)


def test_normalized_latent_gradient_keeps_the_value_and_divides_the_gradient_by_d_z():
    embeddings, _ = latent_batch(latent=4)
    leaves = [embeddings[name].clone().requires_grad_(True) for name in ("x", "x.mu", "x.log_sigma")]
    plain = CMIMLoss().latent_term(*leaves)
    scaled = CMIMLoss(normalize_latent_grad=True).latent_term(*leaves)
    torch.testing.assert_close(scaled, plain)
    plain_grads = torch.autograd.grad(plain.sum(), leaves)
    scaled_grads = torch.autograd.grad(scaled.sum(), leaves)
    for got, expected in zip(scaled_grads, plain_grads):
        torch.testing.assert_close(got, expected / 4)


# ------------------------------------------------------------------------------------------------ contrastive term
@pytest.mark.parametrize("rows", [2, 5, 64])
@pytest.mark.parametrize("temperature", [0.1, 1.0])
def test_collapsed_latents_give_log_2_for_any_batch_size_and_temperature(rows, temperature):
    # Spec check 5.
    value = contrastive(torch.ones(rows, 3), temperature=temperature)
    torch.testing.assert_close(value, torch.full((rows,), math.log(2), dtype=torch.float64))


@pytest.mark.parametrize(("temperature", "expected"), [(1.0, 0.313262), (0.1, 4.5399e-5)])
def test_orthonormal_latents(temperature, expected):
    value = contrastive(3.0 * torch.eye(3), temperature=temperature)  # scale does not matter: cosine
    assert value.tolist() == pytest.approx([expected] * 3, rel=1e-4)


def test_antipodal_pair():
    value = contrastive([[1.0, 2.0], [-1.0, -2.0]], temperature=1.0)
    assert value.tolist() == pytest.approx([0.126928] * 2, abs=1e-6)


def equal_similarity_latents(rows, similarity):
    """``rows`` unit vectors with pairwise cosine ``similarity``: sqrt(s) e_0 + sqrt(1 - s) e_i."""
    z = torch.zeros(rows, rows + 1, dtype=torch.float64)
    z[:, 0] = math.sqrt(similarity)
    z[torch.arange(rows), torch.arange(1, rows + 1)] = math.sqrt(1 - similarity)
    return z


def test_equal_negative_similarities_give_a_value_independent_of_the_batch_size():
    s, tau = 0.4, 0.2
    expected = math.log(1 + math.exp((s - 1) / tau))
    for rows in (4, 64):
        assert contrastive(equal_similarity_latents(rows, s), temperature=tau).tolist() == pytest.approx(
            [expected] * rows
        )
    # The sum-normalised (InfoNCE-like) variant grows with the batch: log(e^{1/tau} + (B-1) e^{s/tau}) - 1/tau.
    for rows in (4, 64):
        summed = contrastive(equal_similarity_latents(rows, s), temperature=tau, negatives_reduction="sum")
        assert summed[0].item() == pytest.approx(math.log(1 + (rows - 1) * math.exp((s - 1) / tau)))


def test_sum_variant_at_collapse_gives_log_b():
    value = contrastive(torch.ones(8, 2), negatives_reduction="sum", temperature=0.5)
    assert value.tolist() == pytest.approx([2.079442] * 8, abs=1e-6)


def test_a_single_row_has_no_contrastive_term():
    assert contrastive(torch.randn(1, 3)).tolist() == [0.0]


def test_contrastive_gradient_is_orthogonal_to_each_latent():
    # Spec check 6: cosine is scale-invariant, and the fixed self-similarity carries no gradient.
    z = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    CMIMLoss(temperature=0.3).contrastive_term(z).sum().backward()
    torch.testing.assert_close((z.grad * z.detach()).sum(-1), torch.zeros(6, dtype=torch.float64))
    assert z.grad.abs().max() > 1e-3


def test_contrastive_term_repels_close_latents():
    z = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    CMIMLoss(temperature=0.5).contrastive_term(z).sum().backward()
    with torch.no_grad():
        moved = F.normalize(z - 0.1 * z.grad, dim=-1)
    assert moved[0] @ moved[1] < F.normalize(z.detach(), dim=-1)[0] @ F.normalize(z.detach(), dim=-1)[1]


# ------------------------------------------------------------------------------------------------ full loss
def test_hand_computed_loss():
    # One latent dimension, two rows: z = (1, -1), mu = (1, -1), sigma = 1; Gaussian decoder, exact reconstruction.
    ones = torch.ones(2, 1, dtype=torch.float64)
    z = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    embeddings = {"x": z, "x.mu": z, "x.log_sigma": 0 * ones, "x.reconstruction": 2 * ones}
    batch = {"features": {"x": {"values": 2 * ones}}}
    output = CMIMLoss(temperature=1.0)(embeddings, batch)
    log_q, log_p = -0.5 * LOG_2PI, -0.5 - 0.5 * LOG_2PI
    expected = -0.5 * (log_q + log_p) + 0.5 * LOG_2PI + math.log(1 + math.exp(-2))
    assert output.loss.item() == pytest.approx(expected)
    assert output.logs["contrastive"].item() == pytest.approx(math.log(1 + math.exp(-2)))
    assert output.logs["reconstruction"].item() == pytest.approx(0.5 * LOG_2PI)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reconstruction_reductions(reduction):
    targets = torch.tensor([[0.0, 1.0, 0.5]], dtype=torch.float64)
    logits = torch.tensor([[0.0, 2.0, -1.0]], dtype=torch.float64)
    bce = -(targets * F.logsigmoid(logits) + (1 - targets) * F.logsigmoid(-logits))
    loss = CMIMLoss(likelihood="bernoulli", reconstruction_reduction=reduction)
    expected = bce.mean(-1) if reduction == "mean" else bce.sum(-1)
    torch.testing.assert_close(loss.reconstruction_term(logits, targets), expected)
    gaussian = CMIMLoss(reconstruction_reduction=reduction).reconstruction_term(targets, targets)
    assert gaussian.item() == pytest.approx(0.5 * LOG_2PI * (1 if reduction == "mean" else 3))


def test_zero_contrastive_weight_is_amim_bit_for_bit():
    # Spec check 7.
    embeddings, batch = latent_batch(dtype=torch.float32)
    mim = CMIMLoss(contrastive_weight=0.0, reconstruction_weight=0.7)
    output = mim(embeddings, batch)
    latent = -0.5 * (
        gaussian_log_density(embeddings["x"], embeddings["x.mu"], embeddings["x.log_sigma"])
        + (-0.5 * embeddings["x"].pow(2) - 0.5 * LOG_2PI).sum(-1)
    )
    reconstruction = (0.5 * (batch["features"]["x"]["values"] - embeddings["x.reconstruction"]).pow(2)).add(
        0.5 * LOG_2PI
    )
    assert torch.equal(output.loss, (latent + 0.7 * reconstruction.mean(-1)).mean())
    assert "contrastive" not in output.logs
    full = CMIMLoss(reconstruction_weight=0.7)(embeddings, batch)
    contrastive_part = CMIMLoss().contrastive_term(embeddings["x"]).mean()
    torch.testing.assert_close(full.loss, output.loss + contrastive_part)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"latent_loss": "vae", "contrastive_weight": 0.0},
        {"likelihood": "bernoulli", "reconstruction_reduction": "sum", "negatives_reduction": "sum"},
        {"temperature": 0.5, "reconstruction_weight": 0.3},
    ],
)
def test_gradient_matches_finite_differences(options):
    # normalize_latent_grad changes the gradient on purpose; it is checked against the plain one above.
    embeddings, batch = latent_batch(rows=4, latent=3, features=3)
    names = list(embeddings)
    loss = CMIMLoss(**options)

    def total(*tensors):
        return loss(dict(zip(names, tensors)), batch).loss

    inputs = tuple(embeddings[name].clone().requires_grad_(True) for name in names)
    assert torch.autograd.gradcheck(total, inputs, eps=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_input_is_refused_with_a_clear_error():
    embeddings, batch = latent_batch()
    with pytest.raises(ValueError, match=r"missing \['x.reconstruction'\]"):
        CMIMLoss()({k: v for k, v in embeddings.items() if k != "x.reconstruction"}, batch)
    with pytest.raises(ValueError, match=r"batch\['features'\]\['x'\]\['values'\]"):
        CMIMLoss()(embeddings, {"features": {}})
    with pytest.raises(ValueError, match="must match the input 'x'"):
        CMIMLoss()(embeddings, {"features": {"x": {"values": torch.zeros(5, 7)}}})
    with pytest.raises(ValueError, match="one shape"):
        CMIMLoss()({**embeddings, "x.mu": embeddings["x.mu"][:, :2]}, batch)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        CMIMLoss(likelihood="bernoulli")(embeddings, {"features": {"x": {"values": torch.full((5, 4), 2.0)}}})
    for options, message in (
        ({"temperature": 0.0}, "temperature"),
        ({"contrastive_weight": -1.0}, "contrastive_weight"),
        ({"latent_loss": "kl"}, "latent_loss"),
        ({"likelihood": "poisson"}, "likelihood"),
        ({"negatives_reduction": "max"}, "negatives_reduction"),
    ):
        with pytest.raises(ValueError, match=message):
            CMIMLoss(**options)


# ------------------------------------------------------------------------------------------------ distributed
class CMIMOnVectorTowers(ContrastiveObjective):
    """CMIMLoss on the 2-process worker's vector towers: ``a`` is z, ``b`` mu, ``c`` log sigma, and the first
    ``VECTOR_DIM`` dimensions of ``a`` reconstruct ``a``'s input (math, not semantics: no noise is sampled)."""

    required_columns = ("a", "b", "c")

    def __init__(self, **options) -> None:
        super().__init__()
        self.loss = CMIMLoss(**options)

    def forward(self, embeddings, batch):
        from tests.vision.multimodal_worker import VECTOR_DIM

        renamed = {
            "x": embeddings["a"],
            "x.mu": embeddings["b"],
            "x.log_sigma": 0.1 * embeddings["c"],
            "x.reconstruction": embeddings["a"][:, :VECTOR_DIM],
        }
        return self.loss(renamed, {"features": {"x": batch["features"]["a"]}})


def test_two_processes_equal_one_process_with_the_doubled_batch(tmp_path):
    from tests.vision.helpers import tiny_clip_tokenizer
    from tests.vision.multimodal_worker import assert_distributed_matches_single

    scenario = {
        "objective": "tests.objectives.test_cmim:CMIMOnVectorTowers",
        "options": {"temperature": 0.5},
        "dataset": "vectors",
    }
    assert_distributed_matches_single(tmp_path, tiny_clip_tokenizer(), scenario)
