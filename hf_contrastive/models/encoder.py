"""ContrastiveEncoder: any ``AutoModel`` backbone + pooling (+ projection, + normalisation) as one PreTrainedModel.

Saved with ``save_pretrained`` and reloaded with ``AutoModel.from_pretrained(path)`` after ``import hf_contrastive``
(the config and model are registered with the Auto classes; nothing is written to ``auto_map``, no
``trust_remote_code``). The backbone's config is nested in ``backbone_config``, so a reload needs no access to the
original checkpoint.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from .packed import packed_forward, packed_pool

POOLING_MODES = ("mean", "cls", "last_token")


class ContrastiveEncoderConfig(PretrainedConfig):
    """Config of a :class:`ContrastiveEncoder`.

    Args:
        backbone_config: the backbone's config (a ``PretrainedConfig`` or its dict with ``model_type``).
        pooling: ``"mean"`` (masked mean of token states), ``"cls"`` (first token) or ``"last_token"`` (last
            non-padding token, for decoder backbones; works with left or right padding).
        projection_dim: size of an optional linear projection after pooling (``None``: no projection).
        normalize: L2-normalise the embeddings in ``forward`` and ``encode``.
    """

    model_type = "contrastive-encoder"
    sub_configs = {"backbone_config": AutoConfig}

    def __init__(
        self,
        backbone_config: PretrainedConfig | dict | None = None,
        pooling: str = "mean",
        projection_dim: int | None = None,
        normalize: bool = False,
        **kwargs,
    ) -> None:
        if isinstance(backbone_config, dict):
            backbone_config = AutoConfig.for_model(**backbone_config)
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}.")
        self.backbone_config = backbone_config
        self.pooling = pooling
        self.projection_dim = projection_dim
        self.normalize = normalize
        if backbone_config is not None:  # the Trainer aligns (and warns about) a pad id missing from the outer config
            kwargs.setdefault("pad_token_id", backbone_config.pad_token_id)
        super().__init__(**kwargs)

    @property
    def embedding_dim(self) -> int:
        return self.projection_dim or self.backbone_config.hidden_size


@dataclass
class ContrastiveEncoderOutput(ModelOutput):
    """``embeddings`` [N, D] (pooled, projected, optionally normalised); ``last_hidden_state`` [N, L, H]."""

    embeddings: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool token states [N, L, H] under ``attention_mask`` [N, L] into [N, H]."""
    if mode == "cls":
        return hidden[:, 0]
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    if mode == "mean":
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    last = (attention_mask * positions).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class ContrastiveEncoder(PreTrainedModel):
    """Text encoder for contrastive training: backbone -> pooling -> optional projection -> optional L2 norm."""

    config_class = ContrastiveEncoderConfig
    base_model_prefix = "backbone"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True

    def __init__(self, config: ContrastiveEncoderConfig) -> None:
        super().__init__(config)
        self.backbone = AutoModel.from_config(config.backbone_config)
        hidden_size = config.backbone_config.hidden_size
        self.projection = nn.Linear(hidden_size, config.projection_dim) if config.projection_dim else None
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        std = getattr(self.config.backbone_config, "initializer_range", 0.02)
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    @classmethod
    def from_backbone(
        cls,
        backbone: str | PretrainedConfig,
        pooling: str = "mean",
        projection_dim: int | None = None,
        normalize: bool = False,
        **backbone_kwargs,
    ) -> ContrastiveEncoder:
        """Wrap a pretrained backbone (path or Hub id, weights loaded) or a config (random init)."""
        if isinstance(backbone, PretrainedConfig):
            config = ContrastiveEncoderConfig(backbone, pooling, projection_dim, normalize)
            return cls(config)
        pretrained = AutoModel.from_pretrained(backbone, **backbone_kwargs)
        config = ContrastiveEncoderConfig(pretrained.config, pooling, projection_dim, normalize)
        config.base_model_name_or_path = str(backbone)
        model = cls(config)
        model.backbone = pretrained
        return model

    @classmethod
    def load(cls, name_or_path: str, **encoder_kwargs) -> ContrastiveEncoder:
        """A saved ContrastiveEncoder as it is (its own pooling etc.), or a backbone wrapped with ``encoder_kwargs``."""
        if AutoConfig.from_pretrained(name_or_path).model_type == ContrastiveEncoderConfig.model_type:
            return AutoModel.from_pretrained(name_or_path)
        return cls.from_backbone(name_or_path, **encoder_kwargs)

    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        unpad: bool = False,
        **backbone_kwargs,
    ) -> ContrastiveEncoderOutput:
        """Embed a batch: ``input_ids`` / ``attention_mask`` [N, L] -> ``embeddings`` [N, D].

        ``unpad=True`` runs the backbone on the real tokens only, packed into one row (:mod:`.packed`: no
        attention-probability dropout on that path); ``last_hidden_state`` is then the packed [1, T, H].
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if unpad:
            hidden, packed = packed_forward(self, input_ids, attention_mask, **backbone_kwargs)
            embeddings = packed_pool(hidden, packed, self.config.pooling)
        else:
            hidden = self.backbone(
                input_ids=input_ids, attention_mask=attention_mask, **backbone_kwargs
            ).last_hidden_state
            embeddings = pool(hidden, attention_mask, self.config.pooling)
        if self.projection is not None:
            embeddings = self.projection(embeddings)
        if self.config.normalize:
            embeddings = F.normalize(embeddings, dim=-1)
        return ContrastiveEncoderOutput(embeddings=embeddings, last_hidden_state=hidden)

    def push_to_hub(
        self,
        repo_id: str,
        tokenizer=None,
        commit_message: str = "Upload ContrastiveEncoder",
        private: bool | None = None,
        token: str | None = None,
        revision: str | None = None,
        max_shard_size: str = "50GB",
    ):
        """Upload config and weights (and ``tokenizer``) to ``repo_id``, with a card if the repo has none yet.

        The card comes from :func:`hf_contrastive.hub.encoder_model_card` (what the model knows by itself); a card
        already on the repo (for example the Trainer's, richer one) is kept as it is.
        """
        from huggingface_hub import HfApi

        from ..hub import encoder_model_card, push_folder

        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, max_shard_size=max_shard_size)
            if tokenizer is not None:
                tokenizer.save_pretrained(folder)
            if not api.file_exists(repo_id, "README.md", revision=revision):
                encoder_model_card(self, repo_id).save(os.path.join(folder, "README.md"))
            return push_folder(folder, repo_id, token=token, commit_message=commit_message, revision=revision)

    @torch.no_grad()
    def encode(
        self,
        texts: Sequence[str],
        tokenizer,
        batch_size: int = 64,
        max_length: int | None = None,
    ) -> torch.Tensor:
        """Embed ``texts`` for inference: eval mode, no grad, length-sorted batches; returns [N, D] on CPU."""
        if isinstance(texts, str):
            raise TypeError("encode expects a list of texts, got a single string; wrap it in a list.")
        was_training = self.training
        self.eval()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        chunks = []
        for start in range(0, len(order), batch_size):
            batch_texts = [texts[i] for i in order[start : start + batch_size]]
            features = tokenizer(
                batch_texts,
                padding=True,
                truncation=max_length is not None or tokenizer.model_max_length < 100_000,
                max_length=max_length,
                return_tensors="pt",
            ).to(self.device)
            features.pop("token_type_ids", None)
            chunks.append(self(**features).embeddings.float().cpu())
        self.train(was_training)
        embeddings = torch.cat(chunks) if chunks else torch.empty(0, self.config.embedding_dim)
        result = torch.empty_like(embeddings)
        result[torch.tensor(order, dtype=torch.long)] = embeddings
        return result
