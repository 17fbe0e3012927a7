"""Small CLIP models built from configs (no pretrained CLIP is available offline) and the feature accessors.

``transformers`` 5 returns a ``BaseModelOutputWithPooling`` from ``CLIPModel.get_image_features`` /
``get_text_features`` (the projected embedding is its ``pooler_output``); older versions returned the tensor.
:func:`image_embeddings` and :func:`text_embeddings` hide the difference and unwrap PEFT models, so every trainer,
evaluator and recipe gets ``[B, projection_dim]`` the same way.
"""

from __future__ import annotations

import torch
from transformers import CLIPConfig, CLIPModel, CLIPProcessor, PreTrainedTokenizerBase

try:  # transformers >= 5 names the PIL backend explicitly; the default one needs torchvision.
    from transformers import CLIPImageProcessorPil as _ImageProcessor
except ImportError:  # pragma: no cover - older transformers
    from transformers import CLIPImageProcessor as _ImageProcessor


def small_clip_config(
    tokenizer: PreTrainedTokenizerBase,
    image_size: int = 28,
    patch_size: int = 7,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
    projection_dim: int = 64,
    max_text_length: int = 32,
    num_channels: int = 3,
) -> CLIPConfig:
    """A CLIP config sized for small images and a tokenizer trained offline (its [SEP] ends every caption).

    The text tower pools at the first ``eos_token_id``: we set it to the tokenizer's ``sep_token_id`` (or
    ``eos_token_id``), which every tokenized caption ends with.
    """
    eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if eos is None:
        raise ValueError("small_clip_config needs a tokenizer with a sep_token or eos_token (the text pooling token).")
    tower = {
        "hidden_size": hidden_size,
        "intermediate_size": 4 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
    }
    text_config = {
        **tower,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": max_text_length,
        "eos_token_id": eos,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.cls_token_id if tokenizer.cls_token_id is not None else eos,
    }
    vision_config = {**tower, "image_size": image_size, "patch_size": patch_size, "num_channels": num_channels}
    return CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=projection_dim)


def small_clip(tokenizer: PreTrainedTokenizerBase, seed: int = 0, **config_kwargs) -> CLIPModel:
    """A randomly initialised ``CLIPModel`` from :func:`small_clip_config` (seeded)."""
    torch.manual_seed(seed)
    return CLIPModel(small_clip_config(tokenizer, **config_kwargs))


def clip_processor(
    tokenizer: PreTrainedTokenizerBase,
    image_size: int = 28,
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5),
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5),
) -> CLIPProcessor:
    """A ``CLIPProcessor`` that resizes and centre-crops to ``image_size``, converts to RGB and normalises."""
    image_processor = _ImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=list(image_mean),
        image_std=list(image_std),
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _as_tensor(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def unwrap_clip(model) -> CLIPModel:
    """The ``CLIPModel`` inside a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if get_base is not None else model


def image_embeddings(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """Projected, unnormalised image embeddings [B, projection_dim] of a (PEFT-wrapped) ``CLIPModel``."""
    return _as_tensor(unwrap_clip(model).get_image_features(pixel_values=pixel_values))


def text_embeddings(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Projected, unnormalised text embeddings [B, projection_dim] of a (PEFT-wrapped) ``CLIPModel``."""
    return _as_tensor(unwrap_clip(model).get_text_features(input_ids=input_ids, attention_mask=attention_mask))
