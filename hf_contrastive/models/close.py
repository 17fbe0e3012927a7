"""CLOSE: task heads trained on CLIP *text* embeddings with noise injection, evaluated on CLIP *image* embeddings.

Gu, Clark and Kembhavi, "I Can't Believe There's No Images! Learning Visual Tasks Using only Language Supervision"
(ICCV 2023, arXiv:2211.09778). A frozen CLIP maps a caption to ``e_T = normalize(CLIP_text(caption))`` [B, D]; during
training an *adapter* perturbs it so the head cannot rely on where text embeddings sit on the sphere (the modality
gap); at test time the image embedding ``e_I = normalize(CLIP_image(image))`` is fed in with no adapter.

Adapters (``v`` is what the head sees; ``n ~ N(0, I_D)``; noise terms only in training mode):

=================  ======================================================================================
``noise``          ``v = normalize(e_T + sigma n)``  (sigma is the per-dimension std; variance sigma^2)
``mean_shift``     ``v = e_T + a delta`` [renormalise if asked], then ``v = normalize(v + sigma n)``;
                   ``delta = mean(e_I) - mean(e_T)`` over paired data
``cov_noise``      ``v = normalize(e_T + delta + 3 m + sigma n)``, ``m ~ N(0, Cov(e_I - e_T))``
``linear``         ``v = normalize(W e_T + b)``, then ``v = normalize(v + sigma n)``; W, b by least squares
                   text -> image on paired data
=================  ======================================================================================

Deterministic parts (shift, linear map) also run in eval mode on text inputs; image inputs never see an adapter.
As in the official ``CovNoise``, the covariance adapter is the identity in eval mode, shift included.

The models hold the head (and decoder) and the adapter's statistics, never the CLIP: they take CLIP embeddings
(``text_embedding`` or ``image_embedding``) and record the frozen CLIP's name or path and its embedding size in their
config (``clip_name_or_path``, ``clip_dim``). :class:`FrozenCLIP` computes those embeddings (no gradient), e.g.
inside ``datasets.map`` (:func:`hf_contrastive.data.close.add_clip_embeddings`), so a saved folder is a few hundred
kilobytes instead of a CLIP copy and the CLIP is loaded once for any number of heads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForSeq2SeqLM, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput, SequenceClassifierOutput

from .clip import image_embeddings, text_embeddings

PAPER = "2211.09778"
CITATION = """@inproceedings{gu2023close,
  title={I Can't Believe There's No Images! Learning Visual Tasks Using only Language Supervision},
  author={Gu, Sophia and Clark, Christopher and Kembhavi, Aniruddha},
  booktitle={Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  year={2023}
}"""

# The official per-task noise std for CLIP ViT-L/14 (D = 768); retune for other D (the perturbation grows as D sigma^2).
DEFAULT_SIGMA = {"vqa": 0.04, "e-vqa": 0.04, "visual_entailment": 0.08, "single_caption": 0.12, "multi_caption": 0.04}
REFERENCE_CLIP_DIM = 768


def sigma_for_dim(sigma: float, dim: int, reference_dim: int = REFERENCE_CLIP_DIM) -> float:
    """The noise std that perturbs a ``dim``-dimensional embedding as much as ``sigma`` perturbs a ViT-L/14 one.

    Keeps ``E||sigma n||^2 = D sigma^2`` fixed: ``sigma * sqrt(reference_dim / dim)``.
    """
    return sigma * (reference_dim / dim) ** 0.5


# ----------------------------------------------------------------------------------------------- adapters
class EmbeddingAdapter(nn.Module):
    """Base class of the training-time text-embedding adapters: ``forward(e_T [B, D]) -> v [B, D]``.

    ``fit(text, image)`` estimates the adapter's statistics from paired, L2-normalised embeddings [N, D] (a no-op for
    adapters without statistics). The statistics are persistent buffers, so they are saved with the model.
    """

    def __init__(self, sigma: float) -> None:
        super().__init__()
        if sigma < 0:
            raise ValueError(f"sigma (the noise std per dimension) must be >= 0, got {sigma}.")
        self.sigma = sigma

    def add_noise(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``normalize(x + sigma n)`` in training mode, ``x`` unchanged in eval mode."""
        if not self.training:
            return embeddings
        return F.normalize(embeddings + self.sigma * torch.randn_like(embeddings), dim=-1)

    def fit(self, text: torch.Tensor, image: torch.Tensor) -> EmbeddingAdapter:
        return self


def _check_paired(text: torch.Tensor, image: torch.Tensor, dim: int) -> None:
    if text.ndim != 2 or text.shape != image.shape or text.shape[1] != dim or text.shape[0] < 2:
        raise ValueError(
            f"Adapter statistics need paired text and image embeddings of the same shape [N >= 2, {dim}], got "
            f"{tuple(text.shape)} and {tuple(image.shape)}."
        )


class GaussianNoiseAdapter(EmbeddingAdapter):
    """CLOSE's main adapter: ``v = normalize(e_T + sigma n)``, ``n ~ N(0, I_D)``, in training mode only.

    ``E||e_T + sigma n||^2 = 1 + D sigma^2``; after renormalisation the cosine to ``e_T`` is about
    ``1 / sqrt(1 + D sigma^2)`` (0.34 for D = 768, sigma = 0.1). ``renormalize=False`` returns ``e_T + sigma n``.
    """

    def __init__(self, sigma: float, renormalize: bool = True) -> None:
        super().__init__(sigma)
        self.renormalize = renormalize

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        if not self.training or self.renormalize:
            return self.add_noise(embeddings)
        return embeddings + self.sigma * torch.randn_like(embeddings)


class MeanShiftAdapter(EmbeddingAdapter):
    """``v = e_T + scale * delta`` (renormalised if ``renormalize_shift``), then noise: ``normalize(v + sigma n)``.

    ``delta = mean(e_I) - mean(e_T)`` [D] over paired data (:meth:`fit`). The shift also applies in eval mode (it is
    deterministic); the official ``get_adapter`` uses ``renormalize_shift=False``.
    """

    def __init__(self, dim: int, sigma: float, scale: float = 1.0, renormalize_shift: bool = False) -> None:
        super().__init__(sigma)
        self.scale = scale
        self.renormalize_shift = renormalize_shift
        self.register_buffer("delta", torch.zeros(dim))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        shifted = embeddings + self.scale * self.delta
        if self.renormalize_shift:
            shifted = F.normalize(shifted, dim=-1)
        return self.add_noise(shifted)

    def fit(self, text: torch.Tensor, image: torch.Tensor) -> MeanShiftAdapter:
        _check_paired(text, image, self.delta.shape[0])
        self.delta.copy_(image.mean(dim=0) - text.mean(dim=0))
        return self


class CovNoiseAdapter(EmbeddingAdapter):
    """Structured noise: ``v = normalize(e_T + delta + covariance_scale * m + sigma n)``, ``m ~ N(0, Sigma_diff)``.

    ``delta`` [D] and ``Sigma_diff`` [D, D] are the mean and covariance of ``e_I - e_T`` over paired data (:meth:`fit`;
    the Cholesky factor is stored, with a 1e-6 jitter on the diagonal so that a rank-deficient covariance still
    factorises). ``covariance_scale`` is hard-coded to 3 in the official code. Identity in eval mode, as there.
    """

    def __init__(self, dim: int, sigma: float, covariance_scale: float = 3.0) -> None:
        super().__init__(sigma)
        self.covariance_scale = covariance_scale
        self.register_buffer("delta", torch.zeros(dim))
        self.register_buffer("difference_scale_tril", torch.zeros(dim, dim))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return embeddings
        structured = torch.randn_like(embeddings) @ self.difference_scale_tril.T  # rows ~ N(0, Sigma_diff)
        return self.add_noise(embeddings + self.delta + self.covariance_scale * structured)

    def fit(self, text: torch.Tensor, image: torch.Tensor) -> CovNoiseAdapter:
        _check_paired(text, image, self.delta.shape[0])
        differences = (image - text).double()
        covariance = torch.cov(differences.T)
        jitter = 1e-6 * torch.eye(covariance.shape[0], dtype=covariance.dtype)
        self.delta.copy_(differences.mean(dim=0))
        self.difference_scale_tril.copy_(torch.linalg.cholesky(covariance + jitter))
        return self


class LinearAdapter(EmbeddingAdapter):
    """``v = W e_T + b`` (renormalised if ``renormalize_shift``, the official default), then ``normalize(v + sigma n)``.

    ``W`` [D, D] and ``b`` [D] map text embeddings to their paired image embeddings by least squares (:meth:`fit`);
    before fitting the map is the identity. Applied in eval mode too (deterministic).
    """

    def __init__(self, dim: int, sigma: float, renormalize_shift: bool = True) -> None:
        super().__init__(sigma)
        self.renormalize_shift = renormalize_shift
        self.register_buffer("weight", torch.eye(dim))
        self.register_buffer("bias", torch.zeros(dim))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        mapped = embeddings @ self.weight.T + self.bias
        if self.renormalize_shift:
            mapped = F.normalize(mapped, dim=-1)
        return self.add_noise(mapped)

    def fit(self, text: torch.Tensor, image: torch.Tensor) -> LinearAdapter:
        _check_paired(text, image, self.bias.shape[0])
        design = torch.cat([text, torch.ones_like(text[:, :1])], dim=1).double()  # [N, D + 1]
        solution = torch.linalg.lstsq(design, image.double()).solution  # [D + 1, D]
        self.weight.copy_(solution[:-1].T)
        self.bias.copy_(solution[-1])
        return self


ADAPTER_KINDS = ("noise", "mean_shift", "cov_noise", "linear")


def build_adapter(config: CLOSEConfig) -> EmbeddingAdapter:
    """The adapter a CLOSE config names (statistics zero / identity until fitted or loaded)."""
    dim, sigma = config.clip_dim, config.sigma
    if config.adapter == "noise":
        return GaussianNoiseAdapter(sigma, config.renormalize)
    if config.adapter == "mean_shift":
        return MeanShiftAdapter(dim, sigma, config.shift_scale, bool(config.renormalize_shift))
    if config.adapter == "cov_noise":
        return CovNoiseAdapter(dim, sigma, config.covariance_scale)
    renormalize = True if config.renormalize_shift is None else config.renormalize_shift
    return LinearAdapter(dim, sigma, renormalize)


# ----------------------------------------------------------------------------------------------- configs
class CLOSEConfig(PretrainedConfig):
    """What every CLOSE model records: the frozen CLIP it reads, the adapter and its noise.

    Args:
        clip_name_or_path: the frozen CLIP whose embeddings the model reads (a Hub id or a local path; recorded, not
            loaded: the model never holds the CLIP).
        clip_dim: the CLIP embedding size D (``projection_dim``); inputs of any other size are refused.
        adapter: one of ``ADAPTER_KINDS`` ("noise", "mean_shift", "cov_noise", "linear"), applied to text inputs.
        sigma: the noise std per dimension (variance sigma^2). The paper's ViT-L/14 defaults are in
            ``DEFAULT_SIGMA``; :func:`sigma_for_dim` rescales one to another D.
        renormalize: "noise" adapter only: renormalise after adding the noise (the paper: yes).
        shift_scale: "mean_shift" only: the factor ``a`` on ``delta``.
        renormalize_shift: "mean_shift" / "linear": renormalise the shifted / mapped embedding before the noise step
            (``None``: the official choice, False for mean shift, True for linear).
        covariance_scale: "cov_noise" only: the factor on the structured noise (3 in the official code).
    """

    def __init__(
        self,
        clip_name_or_path: str | None = None,
        clip_dim: int = 512,
        adapter: str = "noise",
        sigma: float = DEFAULT_SIGMA["single_caption"],
        renormalize: bool = True,
        shift_scale: float = 1.0,
        renormalize_shift: bool | None = None,
        covariance_scale: float = 3.0,
        **kwargs,
    ) -> None:
        if adapter not in ADAPTER_KINDS:
            raise ValueError(f"adapter must be one of {list(ADAPTER_KINDS)}, got {adapter!r}.")
        if sigma < 0:
            raise ValueError(f"sigma (the noise std per dimension) must be >= 0, got {sigma}.")
        self.clip_name_or_path = clip_name_or_path
        self.clip_dim = clip_dim
        self.adapter = adapter
        self.sigma = sigma
        self.renormalize = renormalize
        self.shift_scale = shift_scale
        self.renormalize_shift = renormalize_shift
        self.covariance_scale = covariance_scale
        super().__init__(**kwargs)


class CLOSEClassifierConfig(CLOSEConfig):
    """A :class:`CLOSEConfig` + the head: ``num_labels`` (or ``id2label``), an optional hidden layer, dropout."""

    model_type = "close-classifier"

    def __init__(self, hidden_size: int | None = None, dropout: float = 0.0, **kwargs) -> None:
        self.hidden_size = hidden_size
        self.dropout = dropout
        super().__init__(**kwargs)


class CLOSECaptionerConfig(CLOSEConfig):
    """A :class:`CLOSEConfig` + the decoder: a seq2seq LM config (T5 in the paper) and the prefix length.

    Args:
        decoder_config: the encoder-decoder LM's config (``PretrainedConfig`` or its dict with ``model_type``); the
            LM is built from it (random init) or loaded by :meth:`CLOSECaptioner.from_decoder`.
        prefix_length: soft tokens the CLIP embedding becomes (4 in the paper).
    """

    model_type = "close-captioner"
    sub_configs = {"decoder_config": AutoConfig}

    def __init__(
        self, decoder_config: PretrainedConfig | dict | None = None, prefix_length: int = 4, **kwargs
    ) -> None:
        if isinstance(decoder_config, dict):
            decoder_config = AutoConfig.for_model(**decoder_config)
        if prefix_length < 1:
            raise ValueError(f"prefix_length must be >= 1, got {prefix_length}.")
        self.decoder_config = decoder_config
        self.prefix_length = prefix_length
        if decoder_config is not None:  # generation needs these on the outer config too
            for name in ("pad_token_id", "eos_token_id", "decoder_start_token_id"):
                kwargs.setdefault(name, getattr(decoder_config, name, None))
        super().__init__(**kwargs)


# ----------------------------------------------------------------------------------------------- models
class CLOSEPreTrainedModel(PreTrainedModel):
    """Shared part of the CLOSE models: input checks, normalisation, the adapter on text inputs only."""

    config_class = CLOSEConfig
    base_model_prefix = "close"

    def __init__(self, config: CLOSEConfig) -> None:
        super().__init__(config)
        self.adapter = build_adapter(config)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    @torch.no_grad()
    def fit_adapter(self, text_embeddings: torch.Tensor, image_embeddings: torch.Tensor) -> None:
        """Estimate the adapter's statistics from paired CLIP embeddings [N, D] (normalised here)."""
        text, image = (self._checked(x, name) for x, name in ((text_embeddings, "text"), (image_embeddings, "image")))
        self.adapter.fit(text.float(), image.float())

    def _checked(self, embedding: torch.Tensor, name: str) -> torch.Tensor:
        if embedding.ndim != 2 or embedding.shape[1] != self.config.clip_dim:
            raise ValueError(
                f"{name}_embedding must be [batch, {self.config.clip_dim}] (the embedding size of the CLIP "
                f"{self.config.clip_name_or_path or '(unnamed)'} this model reads), got {tuple(embedding.shape)}."
            )
        return F.normalize(embedding.to(self.dtype), dim=-1)

    def clip_features(
        self, text_embedding: torch.Tensor | None = None, image_embedding: torch.Tensor | None = None
    ) -> torch.Tensor:
        """What the head reads [B, D]: ``adapter(normalize(text_embedding))`` or ``normalize(image_embedding)``."""
        if (text_embedding is None) == (image_embedding is None):
            raise ValueError("Pass exactly one of text_embedding (training, text inputs) or image_embedding.")
        if image_embedding is not None:
            return self._checked(image_embedding, "image")
        return self.adapter(self._checked(text_embedding, "text"))


class CLOSEClassifier(CLOSEPreTrainedModel):
    """A classifier trained on caption embeddings (with the adapter) and applied to image embeddings.

    ``forward(text_embedding | image_embedding [B, D], labels [B]) -> SequenceClassifierOutput`` with ``logits``
    [B, num_labels] and, given labels, the cross-entropy ``loss``. The head is linear, or an MLP with one hidden layer
    of ``hidden_size`` (GELU) when set.
    """

    config_class = CLOSEClassifierConfig

    def __init__(self, config: CLOSEClassifierConfig) -> None:
        super().__init__(config)
        layers: list[nn.Module] = [nn.Dropout(config.dropout)]
        if config.hidden_size:
            layers += [nn.Linear(config.clip_dim, config.hidden_size), nn.GELU(), nn.Dropout(config.dropout)]
        layers.append(nn.Linear(config.hidden_size or config.clip_dim, config.num_labels))
        self.head = nn.Sequential(*layers)
        self.post_init()

    def forward(
        self,
        text_embedding: torch.Tensor | None = None,
        image_embedding: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput:
        logits = self.head(self.clip_features(text_embedding, image_embedding))
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


class CLOSECaptioner(CLOSEPreTrainedModel):
    """CLOSE's prefix-conditioned seq2seq captioner (``ClosePrefixT5``), trained to write its input caption back.

    The CLIP embedding becomes ``prefix_length`` soft tokens, ``prefix = reshape(Linear_{D -> P*d}(v), (B, P, d))``,
    which the LM's encoder reads before the embedded extra text (the question for VQA; none for captioning):
    ``encoder([prefix; embed(input_ids)])``, attention mask ``[1]*P + attention_mask``. The loss is the LM's
    teacher-forced token cross-entropy on ``labels`` (pad = -100).

    Several targets per example: ``target_mapping`` [T] gives each of the T label rows its example, and the encoder
    output is repeated per target. The loss is then the mean over *all target tokens* (HF convention, token-weighted):
    a longer target weighs more than a shorter one.
    """

    config_class = CLOSECaptionerConfig

    def __init__(self, config: CLOSECaptionerConfig) -> None:
        super().__init__(config)
        self.language_model = AutoModelForSeq2SeqLM.from_config(config.decoder_config)
        self.prefix = nn.Linear(config.clip_dim, config.prefix_length * config.decoder_config.d_model)
        self.post_init()

    @classmethod
    def from_decoder(cls, decoder_name_or_path: str, **config_kwargs) -> CLOSECaptioner:
        """A captioner around a pretrained seq2seq LM (e.g. ``t5-base``); ``config_kwargs`` go to the config."""
        language_model = AutoModelForSeq2SeqLM.from_pretrained(decoder_name_or_path)
        model = cls(CLOSECaptionerConfig(decoder_config=language_model.config, **config_kwargs))
        model.language_model = language_model
        return model

    def prefix_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """[B, D] -> the soft prefix [B, P, d_model]."""
        return self.prefix(features).reshape(features.shape[0], self.config.prefix_length, -1)

    def encode(
        self,
        text_embedding: torch.Tensor | None = None,
        image_embedding: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[BaseModelOutput, torch.Tensor]:
        """Run the LM's encoder on ``[prefix; embed(input_ids)]``: hidden states [B, P + L, d] and their mask."""
        inputs = self.prefix_tokens(self.clip_features(text_embedding, image_embedding))
        mask = torch.ones(inputs.shape[:2], dtype=torch.long, device=inputs.device)
        if input_ids is not None:
            embedded = self.language_model.get_input_embeddings()(input_ids)
            inputs = torch.cat([inputs, embedded], dim=1)
            mask = torch.cat([mask, torch.ones_like(input_ids) if attention_mask is None else attention_mask], dim=1)
        encoder = self.language_model.get_encoder()
        return encoder(inputs_embeds=inputs, attention_mask=mask, return_dict=True), mask

    def forward(
        self,
        text_embedding: torch.Tensor | None = None,
        image_embedding: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        target_mapping: torch.Tensor | None = None,
    ) -> Seq2SeqLMOutput:
        """Teacher-forced loss on ``labels`` [T, L] (-100 = ignored); ``target_mapping`` [T] when T != B."""
        encoded, mask = self.encode(text_embedding, image_embedding, input_ids, attention_mask)
        hidden = encoded.last_hidden_state
        if target_mapping is not None:
            hidden, mask = hidden[target_mapping], mask[target_mapping]
        return self.language_model(
            encoder_outputs=BaseModelOutput(last_hidden_state=hidden), attention_mask=mask, labels=labels
        )

    @torch.no_grad()
    def generate(
        self,
        text_embedding: torch.Tensor | None = None,
        image_embedding: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **generate_kwargs,
    ) -> torch.Tensor:
        """Token ids [B, T] decoded from the prefix (the paper: ``num_beams=5``, ``max_new_tokens=32``)."""
        encoded, mask = self.encode(text_embedding, image_embedding, input_ids, attention_mask)
        return self.language_model.generate(encoder_outputs=encoded, attention_mask=mask, **generate_kwargs)


# ----------------------------------------------------------------------------------------------- frozen CLIP
class FrozenCLIP:
    """A frozen ``CLIPModel`` + processor that embeds raw captions or images: [N, D], L2-normalised, no gradient.

    ``embed_texts`` / ``embed_images`` run in mini-batches of ``batch_size`` under ``torch.no_grad`` with the model in
    eval mode and its parameters frozen; ``name_or_path`` is what CLOSE configs record as ``clip_name_or_path``.
    """

    def __init__(self, model, processor, batch_size: int = 256) -> None:
        self.model = model.eval().requires_grad_(False)
        self.processor = processor
        self.batch_size = batch_size

    @property
    def name_or_path(self) -> str | None:
        return getattr(self.model.config, "_name_or_path", None) or None

    @property
    def dim(self) -> int:
        return self.model.config.projection_dim

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        def embed(chunk: Sequence[str]) -> torch.Tensor:
            tokens = self.processor(text=list(chunk), padding=True, truncation=True, return_tensors="pt")
            return text_embeddings(
                self.model, tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
            )

        return self._in_batches(texts, embed)

    @torch.no_grad()
    def embed_images(self, images: Sequence) -> torch.Tensor:
        def embed(chunk: Sequence) -> torch.Tensor:
            pixels = self.processor(images=[image.convert("RGB") for image in chunk], return_tensors="pt")
            return image_embeddings(self.model, pixels["pixel_values"].to(self.device))

        return self._in_batches(images, embed)

    def _in_batches(self, values: Sequence, embed) -> torch.Tensor:
        chunks = [embed(values[start : start + self.batch_size]) for start in range(0, len(values), self.batch_size)]
        return F.normalize(torch.cat(chunks).float(), dim=-1).cpu()
