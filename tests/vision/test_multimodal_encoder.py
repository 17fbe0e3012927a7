"""MultiModalEncoder: per-modality encoders, the missing-modality plumbing (Symile check 7), save and reload."""

import pytest
import torch
from transformers import AutoConfig, AutoModel

from hf_contrastive.models.multimodal_encoder import MultiModalEncoder, MultiModalEncoderConfig
from hf_contrastive.objectives.symile import SymileLoss


def encoder(**overrides) -> MultiModalEncoder:
    torch.manual_seed(0)
    options = {"modality_dims": {"a": 3, "b": 2, "c": 1}, "hidden_dims": [8], "embedding_dim": 6}
    return MultiModalEncoder(MultiModalEncoderConfig(**{**options, **overrides})).eval()


def inputs(rows: int = 4) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {m: torch.randn(rows, d, generator=generator) for m, d in {"a": 3, "b": 2, "c": 1}.items()}


def test_each_modality_is_embedded_by_its_own_encoder_in_config_order():
    model = encoder()
    values = inputs()
    output = model(c=values["c"], a=values["a"])
    assert [e.shape for e in output.embeddings] == [(4, 6), (4, 6)]
    torch.testing.assert_close(output.embeddings[0], model.embed_column("a", {"values": values["a"]}))
    torch.testing.assert_close(output.embeddings[1], model.encoders["c"](values["c"]))
    # LayerNorm head: every representation has zero mean and unit variance before the affine part
    torch.testing.assert_close(output.embeddings[0].mean(dim=-1), torch.zeros(4), atol=1e-6, rtol=0)


def test_a_missing_input_is_replaced_by_its_fill_and_marked_by_the_flag_embedding():
    model = encoder(missing_embedding_dim=4)
    values = inputs()
    model.fit_missing_fill(values, {"a": torch.tensor([0, 0, 1, 1])})
    torch.testing.assert_close(model.encoders["a"].fill_value, values["a"][:2].mean(dim=0))

    flags = torch.tensor([0, 1, 0, 1])
    garbage = values["a"].clone()
    garbage[flags.bool()] = float("nan")  # whatever a missing row holds, it is never read
    embedded = model.embed_column("a", {"values": garbage, "missing": flags})
    assert torch.isfinite(embedded).all()
    fill = model.encoders["a"].fill_value.expand(4, 3)
    torch.testing.assert_close(embedded[1], model.embed_column("a", {"values": fill, "missing": flags})[1])
    torch.testing.assert_close(embedded[0], model.embed_column("a", {"values": values["a"]})[0])
    # the same placeholder without its flag is another input: the flag embedding changes the representation
    unflagged = model.embed_column("a", {"values": fill, "missing": torch.zeros(4, dtype=torch.long)})
    assert not torch.allclose(embedded[1], unflagged[1])


def test_the_symile_loss_with_missing_modalities_is_finite_and_trains_the_flag_embedding():
    model = encoder(missing_embedding_dim=4, missing_fill="zeros").train()
    values = inputs(6)
    missing = {m: torch.tensor([0, 1, 0, 0, 1, 0]) for m in values}
    model.fit_missing_fill(values, missing)
    assert torch.count_nonzero(model.encoders["b"].fill_value) == 0
    values["b"][missing["b"].bool()] = float("nan")
    embeddings = {m: model.embed_column(m, {"values": values[m], "missing": missing[m]}) for m in values}
    loss = SymileLoss()(embeddings, {}).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.encoders["b"].missing_embedding.weight.grad[1].abs().sum() > 0


def test_save_and_reload_keep_weights_fill_values_and_outputs(tmp_path):
    AutoConfig.register(MultiModalEncoderConfig.model_type, MultiModalEncoderConfig, exist_ok=True)
    AutoModel.register(MultiModalEncoderConfig, MultiModalEncoder, exist_ok=True)
    model = encoder(missing_embedding_dim=3, layer_norm=False)
    values = inputs()
    model.fit_missing_fill(values)
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, MultiModalEncoder)
    assert reloaded.config.modality_dims == {"a": 3, "b": 2, "c": 1}
    torch.testing.assert_close(reloaded.encoders["b"].fill_value, values["b"].mean(dim=0))
    flags = torch.tensor([1, 0, 0, 1])
    for got, expected in zip(
        reloaded(**values, a_missing=flags).embeddings, model(**values, a_missing=flags).embeddings
    ):
        torch.testing.assert_close(got, expected)


def test_bad_inputs_are_refused_with_the_column_named():
    model = encoder()
    with pytest.raises(ValueError, match="'a' must hold vectors of size 3"):
        model.embed_column("a", {"values": torch.zeros(4, 2)})
    with pytest.raises(ValueError, match="no modality 'image'"):
        model.embed_column("image", {"values": torch.zeros(4, 3)})
    with pytest.raises(ValueError, match="need 'values'"):
        model.embed_column("a", {"pixel_values": torch.zeros(4, 3)})
    with pytest.raises(ValueError, match="missing_embedding_dim=0"):
        model.embed_column("a", {"values": torch.zeros(2, 3), "missing": torch.tensor([0, 1])})
    with pytest.raises(ValueError, match="Unknown inputs \\['d'\\]"):
        model(d=torch.zeros(2, 1))
    with pytest.raises(ValueError, match="missing_fill"):
        MultiModalEncoderConfig(missing_fill="median")


def test_view_columns_are_embedded_by_their_source_modality():
    model = MultiModalEncoder(MultiModalEncoderConfig(modality_dims={"x": 3}, hidden_dims=[4]))
    values = {"values": torch.randn(2, 3)}
    torch.testing.assert_close(model.embed_column("x_view_2", values), model.embed_column("x", values))
    with pytest.raises(ValueError, match="no modality 'y'"):
        model.embed_column("y_view_1", values)
