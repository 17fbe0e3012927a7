"""ViewEncoder: one encoder for a column and its views, backbone representation for probes, momentum keys, reload."""

import pytest
import torch

from hf_contrastive.models.view_encoder import ViewEncoder, ViewEncoderConfig


def encoder(**options):
    torch.manual_seed(0)
    return ViewEncoder(
        ViewEncoderConfig(input_dim=5, hidden_dims=[7, 6], projection_dim=4, embedding_dim=3, **options)
    )


def test_every_view_column_shares_the_encoder_and_probes_see_the_backbone():
    model = encoder()
    values = torch.randn(4, 5)
    first = model.embed_column("x_view_1", {"values": values})
    assert first.shape == (4, 3)
    torch.testing.assert_close(model.embed_column("x_view_2", {"values": values}), first)
    representation = model.represent(values.numpy())
    assert representation.shape == (4, 6) and not representation.requires_grad
    torch.testing.assert_close(model.online["head"](representation), first.detach())


def test_momentum_encoder_starts_as_a_copy_and_returns_keys_without_gradient():
    model = encoder(momentum_encoder=True)
    output = model.embed_column("x_view_1", {"values": torch.randn(4, 5)})
    assert set(output) == {"embedding", "key"}
    torch.testing.assert_close(output["key"], output["embedding"].detach())
    assert not output["key"].requires_grad
    assert not any(p.requires_grad for p in model.momentum_encoder.parameters())


def test_save_and_reload_give_identical_embeddings(tmp_path):
    model = encoder(momentum_encoder=True)
    with torch.no_grad():
        model.momentum_encoder["head"][0].weight.add_(1.0)  # a momentum copy that differs from the online one
    model.save_pretrained(tmp_path)
    reloaded = ViewEncoder.from_pretrained(tmp_path)
    values = {"values": torch.randn(3, 5)}
    for key, value in model.embed_column("x", values).items():
        torch.testing.assert_close(reloaded.embed_column("x", values)[key], value)


def test_wrong_input_size_names_the_column():
    with pytest.raises(ValueError, match="Column 'x_view_1' must hold vectors of size 5"):
        encoder().embed_column("x_view_1", {"values": torch.randn(2, 4)})
