"""DenseCLIPSegmenter: semantic segmentation guided by pixel-text score maps of a CLIP ViT (DenseCLIP, arXiv:2112.01518).

    model = DenseCLIPSegmenter.from_clip(clip_model, tokenizer, class_names=["background", "zero", ...])
    out = model(pixel_values, labels=masks)     # out.logits [B, K, H, W], out.score_map [B, K, h, w], out.loss

Forward, with C the CLIP projection size, K classes, h x w the patch grid of an H x W input:

1. **Dense features** (the spec's ViT mapping): the vision tower's last hidden states [B, 1 + hw, Hv] go through
   ``post_layernorm`` and ``visual_projection`` at *every* token: token 0 is the global feature ``zbar`` [B, C],
   the patch tokens are ``z`` [B, C, h, w]. The raw patch states [B, Hv, h, w] are the head's feature map. Inputs
   larger than CLIP's ``image_size`` use the tower's interpolated position embeddings (bicubic in ``transformers``;
   the paper resizes bilinearly). The ViT quirk of the OpenAI code (class embedding added twice) is not reproduced:
   the HF tower adds it once, and the models here are trained, not converted.
2. **Class text embeddings** ``t`` [K, C]: ``[SOS] p_1..p_n [class name tokens] [EOS]`` through CLIP's text tower
   (:func:`hf_contrastive.models.prompting.encode_prompts`), with learnable context ``p`` [n, H_text] (n = 8,
   ``trunc_normal(std=1, a=-2, b=2)`` as in the official code); the same for every image.
3. **Context-aware prompting** (post-model, the paper's default), :class:`ContextDecoder`:
   ``t_b = t + gamma * Decoder(t, [zbar; z])`` [B, K, C], with ``gamma`` [C] initialised at 1e-4.
4. **Score map** ``s[b, k, i, j] = <normalize(z[b, :, i, j]), normalize(t_b[b, k])>`` [B, K, h, w], in [-1, 1].
5. **Segmentation head** on ``concat(features, s)`` [B, Hv + K, h, w] -> logits, resized bilinearly to H x W.
   Any module mapping [B, ``head_in_channels``, h, w] to [B, K, h', w'] can be passed as ``segmentation_head``
   (also to ``from_pretrained``, which then loads its saved weights); the default is :class:`ConvSegmentationHead`.

``text_guidance=False`` gives the spec's baseline (CLIP backbone + the same head, no text, no score map, no aux loss);
``context_decoder_layers=0`` keeps the learnable context but drops the context-aware prompting. With ``labels``
[B, H, W] the output has ``loss = L_seg + aux_loss_weight * L_aux``
(:class:`hf_contrastive.objectives.denseclip.DenseCLIPLoss`). The whole CLIP is saved with the model (the image
encoder is fine-tuned; ``DenseCLIPTrainer`` freezes the text encoder, as the paper's ``lr_mult = 0``). Register:
``AutoConfig.register("denseclip", DenseCLIPConfig)``; ``AutoModel.register(DenseCLIPConfig, DenseCLIPSegmenter)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPConfig, CLIPModel, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import ModelOutput

from ..data.segmentation import IGNORE_INDEX
from ..objectives.denseclip import DenseCLIPLoss
from .prompting import (
    PromptLayout,
    PromptSpecialIds,
    build_prompt_layout,
    class_token_ids,
    encode_prompts,
    prompt_special_ids,
)


class DenseCLIPConfig(PretrainedConfig):
    """Config of a :class:`DenseCLIPSegmenter` (defaults: the released ViT-B/16 configs, scaled where noted).

    Args:
        clip_config: the CLIP inside (``CLIPConfig`` or its dict).
        class_names: the K class names, in class-id order (label k is ``class_names[k]``).
        class_token_ids: their token ids without special tokens (:func:`~.prompting.class_token_ids`); stored so a
            reload needs no tokenizer.
        prompt_special_ids: ``{"sos", "eos", "pad"}`` ids of the prompt frame (:func:`~.prompting.prompt_special_ids`).
        text_guidance: score maps, text embeddings and the aux loss; False is the spec's CLIP + head baseline.
        context_length: learnable context vectors after [SOS] (paper: 8).
        context_init_std: std of their truncated-normal initialisation (official code: 1, cut at +-2 std).
        context_decoder_layers: decoder layers of the context-aware prompting (released configs: 3; 0 = none).
        context_decoder_width, context_decoder_heads, context_decoder_dropout: its width (256), heads (4), dropout
            (0.1).
        gamma_init: initial value of the per-channel residual scale gamma [C] (1e-4).
        head_channels, head_upsample_stages, head_dropout: the default :class:`ConvSegmentationHead`.
        aux_loss_weight: lambda of ``L_seg + lambda * L_aux`` (0.4); score_temperature: tau of ``s / tau`` (0.07).
        ignore_index: label of pixels that count nowhere (255).
        image_mean, image_std: per-channel normalisation of [0, 1] pixels (the CLIP processor's), used by the
            collator built for this model.
    """

    model_type = "denseclip"
    sub_configs = {"clip_config": CLIPConfig}

    def __init__(
        self,
        clip_config: CLIPConfig | dict | None = None,
        class_names: Sequence[str] = (),
        class_token_ids: Sequence[Sequence[int]] = (),
        prompt_special_ids: dict[str, int] | None = None,
        text_guidance: bool = True,
        context_length: int = 8,
        context_init_std: float = 1.0,
        context_decoder_layers: int = 3,
        context_decoder_width: int = 256,
        context_decoder_heads: int = 4,
        context_decoder_dropout: float = 0.1,
        gamma_init: float = 1e-4,
        head_channels: int = 64,
        head_upsample_stages: int = 1,
        head_dropout: float = 0.1,
        aux_loss_weight: float = 0.4,
        score_temperature: float = 0.07,
        ignore_index: int = IGNORE_INDEX,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        **kwargs,
    ) -> None:
        if isinstance(clip_config, dict):
            clip_config = CLIPConfig(**clip_config)
        self.clip_config = clip_config
        self.class_names = list(class_names)
        self.class_token_ids = [list(ids) for ids in class_token_ids]
        self.prompt_special_ids = dict(prompt_special_ids) if prompt_special_ids else None
        self.text_guidance = text_guidance
        self.context_length = context_length
        self.context_init_std = context_init_std
        self.context_decoder_layers = context_decoder_layers
        self.context_decoder_width = context_decoder_width
        self.context_decoder_heads = context_decoder_heads
        self.context_decoder_dropout = context_decoder_dropout
        self.gamma_init = gamma_init
        self.head_channels = head_channels
        self.head_upsample_stages = head_upsample_stages
        self.head_dropout = head_dropout
        self.aux_loss_weight = aux_loss_weight
        self.score_temperature = score_temperature
        self.ignore_index = ignore_index
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        super().__init__(**kwargs)
        self._check()

    def _check(self) -> None:
        if self.text_guidance and self.class_names and len(self.class_token_ids) != len(self.class_names):
            raise ValueError(
                f"class_token_ids has {len(self.class_token_ids)} entries for {len(self.class_names)} class_names; "
                "build the config with DenseCLIPSegmenter.from_clip(clip, tokenizer, class_names)."
            )
        if self.context_decoder_layers and self.context_decoder_width % self.context_decoder_heads:
            raise ValueError(
                f"context_decoder_width {self.context_decoder_width} is not divisible by context_decoder_heads "
                f"{self.context_decoder_heads}."
            )
        if self.ignore_index in range(len(self.class_names)):
            raise ValueError(f"ignore_index {self.ignore_index} is a class id (K = {len(self.class_names)}).")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class DenseCLIPOutput(ModelOutput):
    """``logits`` [B, K, H, W] (input resolution); ``score_map`` [B, K, h, w] (patch grid, cosine, in [-1, 1]);
    ``text_embeddings`` [B, K, C] (context-aware class embeddings); ``loss`` = ``loss_seg + w * loss_aux`` when
    labels are given. ``score_map`` / ``text_embeddings`` are None without text guidance.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    score_map: torch.FloatTensor | None = None
    text_embeddings: torch.FloatTensor | None = None
    loss_seg: torch.FloatTensor | None = None
    loss_aux: torch.FloatTensor | None = None


# ----------------------------------------------------------------------------------------------- context decoder
class DecoderAttention(nn.Module):
    """Multi-head attention of the official ``Attention``: q/k/v projections without bias, scale ``d_head^-0.5``,
    output projection (with bias) and dropout. ``query`` [B, Q, W], ``memory`` [B, M, W] -> [B, Q, W].
    """

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(width, width, bias=False)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=False)
        self.out_proj = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # [B, heads, N, d_head]

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        attended = F.scaled_dot_product_attention(
            self._split(self.q_proj(query)), self._split(self.k_proj(memory)), self._split(self.v_proj(memory))
        )
        return self.dropout(self.out_proj(attended.transpose(1, 2).flatten(2)))


class ContextDecoderLayer(nn.Module):
    """Pre-norm decoder layer: ``x += SelfAttn(LN1 x)``; ``x += CrossAttn(LN2 x, mem)``; ``x += Drop(MLP(LN3 x))``."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.self_attn = DecoderAttention(width, heads, dropout)
        self.cross_attn = DecoderAttention(width, heads, dropout)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * width, width)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(x)
        x = x + self.self_attn(normed, normed)
        x = x + self.cross_attn(self.norm2(x), memory)
        return x + self.dropout(self.mlp(self.norm3(x)))


class ContextDecoder(nn.Module):
    """Vision-to-language decoder: class queries attend to the visual context; returns ``v_post`` [B, K, C].

    ``text`` [B, K, C], ``visual`` [B, 1 + hw, C] (``[zbar; z]``)::

        mem = LN(Linear_{C->W}(LN(visual)));  q = Linear_{C->W}(LN(text))
        q = DecoderLayer^L(q, mem);           v_post = Linear_{W->C}(LN(q))
    """

    def __init__(self, embed_dim: int, width: int, heads: int, layers: int, dropout: float):
        super().__init__()
        self.memory_proj = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, width), nn.LayerNorm(width))
        self.text_proj = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, width))
        self.layers = nn.ModuleList(ContextDecoderLayer(width, heads, dropout) for _ in range(layers))
        self.out_proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, embed_dim))

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        memory = self.memory_proj(visual)
        x = self.text_proj(text)
        for layer in self.layers:
            x = layer(x, memory)
        return self.out_proj(x)


# ----------------------------------------------------------------------------------------------- head
class ConvSegmentationHead(nn.Module):
    """Default head, Semantic-FPN's scale branch for one level: features [B, in_channels, h, w] -> [B, K, h*2^u, w*2^u].

    ``conv3x3-GN-ReLU``, then ``upsample_stages`` x (bilinear 2x upsample, ``conv3x3-GN-ReLU``), dropout, 1x1
    classifier. A replacement head needs only the same call signature (``in_channels`` is checked when present).
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int = 64, upsample_stages: int = 1, dropout=0.1):
        super().__init__()
        self.in_channels = in_channels
        self.stem = _conv_block(in_channels, channels)
        self.stages = nn.ModuleList(_conv_block(channels, channels) for _ in range(upsample_stages))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.stem(features)
        for stage in self.stages:
            x = stage(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        return self.classifier(self.dropout(x))


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if out_channels % g == 0)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.GroupNorm(groups, out_channels),
        nn.ReLU(inplace=True),
    )


# ----------------------------------------------------------------------------------------------- model
class DenseCLIPSegmenter(PreTrainedModel):
    """CLIP ViT + learnable text context + context decoder + segmentation head (see the module docstring).

    ``backbone_prefixes`` / ``text_encoder_prefixes`` name the parameters the trainer gives the backbone and the
    text-encoder learning-rate multipliers.
    """

    config_class = DenseCLIPConfig
    base_model_prefix = "denseclip"
    main_input_name = "pixel_values"
    backbone_prefixes = ("clip.vision_model.", "clip.visual_projection.")
    text_encoder_prefixes = ("clip.text_model.", "clip.text_projection.", "clip.logit_scale")

    def __init__(self, config: DenseCLIPConfig, segmentation_head: nn.Module | None = None) -> None:
        super().__init__(config)
        if config.num_classes < 2:
            raise ValueError(f"DenseCLIP needs at least 2 class_names, got {config.class_names!r}.")
        self.clip = CLIPModel(config.clip_config)
        vision = config.clip_config.vision_config
        self.head_in_channels = vision.hidden_size + (config.num_classes if config.text_guidance else 0)
        if config.text_guidance:
            self._init_text_guidance(config)
        self.segmentation_head = segmentation_head or ConvSegmentationHead(
            self.head_in_channels,
            config.num_classes,
            config.head_channels,
            config.head_upsample_stages,
            config.head_dropout,
        )
        head_in = getattr(self.segmentation_head, "in_channels", self.head_in_channels)
        if head_in != self.head_in_channels:
            raise ValueError(
                f"The segmentation head takes {head_in} channels, but the features are {vision.hidden_size} + "
                f"{self.head_in_channels - vision.hidden_size} score-map channels = {self.head_in_channels}."
            )
        self.objective = DenseCLIPLoss(config.aux_loss_weight, config.score_temperature, config.ignore_index)
        self.post_init()

    def _init_text_guidance(self, config: DenseCLIPConfig) -> None:
        if config.prompt_special_ids is None:
            raise ValueError("prompt_special_ids is missing; build the model with DenseCLIPSegmenter.from_clip.")
        self._build_prompt_layout()  # a prompt longer than the text tower fails here, naming the class
        text_config = config.clip_config.text_config
        self._prompt_layout: PromptLayout | None = None  # built on first use: __init__ may run on the meta device
        self.context = nn.Parameter(torch.empty(config.context_length, text_config.hidden_size))
        embed_dim = config.clip_config.projection_dim
        self.context_decoder = None
        if config.context_decoder_layers:
            self.context_decoder = ContextDecoder(
                embed_dim,
                config.context_decoder_width,
                config.context_decoder_heads,
                config.context_decoder_layers,
                config.context_decoder_dropout,
            )
            self.gamma = nn.Parameter(torch.empty(embed_dim))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, DenseCLIPSegmenter) and module.config.text_guidance:
            std = module.config.context_init_std
            nn.init.trunc_normal_(module.context, std=std, a=-2 * std, b=2 * std)
            if module.context_decoder is not None:
                nn.init.constant_(module.gamma, module.config.gamma_init)

    @classmethod
    def from_clip(
        cls,
        clip_model: CLIPModel,
        tokenizer: PreTrainedTokenizerBase,
        class_names: Sequence[str],
        segmentation_head: nn.Module | None = None,
        **config_kwargs,
    ) -> DenseCLIPSegmenter:
        """A segmenter around (a copy of the weights of) ``clip_model``, with class prompts tokenized by ``tokenizer``.

        ``config_kwargs`` set any :class:`DenseCLIPConfig` field (e.g. ``text_guidance=False`` for the baseline).
        """
        config = DenseCLIPConfig(
            clip_config=clip_model.config,
            class_names=list(class_names),
            class_token_ids=class_token_ids(tokenizer, list(class_names)),
            prompt_special_ids=asdict(prompt_special_ids(tokenizer)),
            **config_kwargs,
        )
        config.base_model_name_or_path = getattr(clip_model.config, "_name_or_path", None) or None
        model = cls(config, segmentation_head=segmentation_head)
        model.clip.load_state_dict(clip_model.state_dict())
        return model

    # ----------------------------------------------------------------------------------------------- parts
    def dense_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``features`` [B, Hv, h, w] (raw patch states), ``zbar`` [B, C] and ``z`` [B, C, h, w] (projected)."""
        vision = self.clip.vision_model
        size = self.config.clip_config.vision_config.image_size
        hidden = vision(
            pixel_values=pixel_values, interpolate_pos_encoding=tuple(pixel_values.shape[-2:]) != (size, size)
        ).last_hidden_state
        projected = self.clip.visual_projection(vision.post_layernorm(hidden))  # every token, not only the class one
        grid = self._patch_grid(pixel_values)
        features = hidden[:, 1:].transpose(1, 2).unflatten(-1, grid)
        return features, projected[:, 0], projected[:, 1:].transpose(1, 2).unflatten(-1, grid)

    def _patch_grid(self, pixel_values: torch.Tensor) -> tuple[int, int]:
        patch = self.config.clip_config.vision_config.patch_size
        return pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch

    def class_text_embeddings(self) -> torch.Tensor:
        """Context-free class embeddings ``t`` [K, C]: the prompts with the learnable context through the text tower."""
        if self._prompt_layout is None or self._prompt_layout.input_ids.device != self.context.device:
            self._prompt_layout = self._build_prompt_layout().to(self.context.device)
        return encode_prompts(self.clip, self._prompt_layout, self.context)

    def _build_prompt_layout(self) -> PromptLayout:
        """``[SOS] p_1..p_n [class tokens] [EOS]`` for every class (no context after the name)."""
        config = self.config
        return build_prompt_layout(
            config.class_token_ids,
            config.context_length,
            0,
            PromptSpecialIds(**config.prompt_special_ids),
            config.clip_config.text_config.max_position_embeddings,
            config.class_names,
        )

    def context_aware_text(
        self, text: torch.Tensor, global_feature: torch.Tensor, dense: torch.Tensor
    ) -> torch.Tensor:
        """``t_b = t + gamma * ContextDecoder(t, [zbar; z])`` [B, K, C] (``t`` expanded when there is no decoder)."""
        text = text.unsqueeze(0).expand(dense.shape[0], *text.shape)
        if self.context_decoder is None:
            return text
        visual = torch.cat([global_feature.unsqueeze(1), dense.flatten(2).transpose(1, 2)], dim=1)
        return text + self.gamma * self.context_decoder(text, visual)

    @staticmethod
    def score_map(dense: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """``s[b, k, i, j] = <normalize(dense[b, :, i, j]), normalize(text[b, k])>``: [B, C, h, w] x [B, K, C] ->
        [B, K, h, w]."""
        return torch.einsum("bchw,bkc->bkhw", F.normalize(dense, dim=1), F.normalize(text, dim=-1))

    # ----------------------------------------------------------------------------------------------- forward
    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> DenseCLIPOutput:
        """Segment ``pixel_values`` [B, 3, H, W] (H, W multiples of the patch size); ``labels`` [B, H, W] add the loss."""
        self._check_inputs(pixel_values, labels)
        features, global_feature, dense = self.dense_features(pixel_values)
        score_map = text = None
        if self.config.text_guidance:
            text = self.context_aware_text(self.class_text_embeddings(), global_feature, dense)
            score_map = self.score_map(dense, text)
            features = torch.cat([features, score_map.to(features.dtype)], dim=1)
        logits = self.segmentation_head(features)
        if logits.dim() != 4 or logits.shape[1] != self.config.num_classes:
            raise ValueError(
                f"The segmentation head returned {tuple(logits.shape)}; expected [B, {self.config.num_classes}, h, w]."
            )
        logits = F.interpolate(logits, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)
        losses = {}
        if labels is not None:
            result = self.objective({"logits": logits, "score_map": score_map}, {"labels": labels})
            losses = {"loss": result.loss, **result.logs}
        return DenseCLIPOutput(logits=logits, score_map=score_map, text_embeddings=text, **losses)

    def _check_inputs(self, pixel_values: torch.Tensor, labels: torch.Tensor | None) -> None:
        vision = self.config.clip_config.vision_config
        if pixel_values.dim() != 4 or pixel_values.shape[1] != vision.num_channels:
            raise ValueError(
                f"pixel_values must be [B, {vision.num_channels}, H, W], got {tuple(pixel_values.shape)}."
            )
        if pixel_values.shape[-2] % vision.patch_size or pixel_values.shape[-1] % vision.patch_size:
            raise ValueError(
                f"Image size {tuple(pixel_values.shape[-2:])} is not a multiple of the patch size {vision.patch_size}; "
                "pad or crop the images (and masks) to a multiple of it."
            )
        if labels is not None and (
            labels.dim() != 3 or labels.shape != (pixel_values.shape[0], *pixel_values.shape[-2:])
        ):
            raise ValueError(
                f"labels must be [B, H, W] = {(pixel_values.shape[0], *pixel_values.shape[-2:])} (the input size), "
                f"got {tuple(labels.shape)}."
            )
