"""CLIPRocketModel: a ``CLIPModel`` plus CLIP-rocket's local MLP projectors, text "local mode" and SSL heads.

From "Improved Baselines for Vision-Language Pre-training" (Fini et al., TMLR 2023). The global branch is CLIP
itself (pooled tower features -> the linear ``visual_projection`` / ``text_projection``). The local (strongly
augmented) views go through separate 3-layer MLP projectors (Linear-BN-ReLU-Linear-BN-ReLU-Linear; hidden 4096 in
the paper, scaled down by default here), and text views run the text tower in **local mode**: dropout on every
layer's input hidden states and drop-path on its attention and MLP branches, active only on those passes (HF's
``CLIPTextConfig.dropout`` would apply to every pass). Optional heads on the pooled features:

* ``barlow`` (BarLIP): Linear-BN-ReLU-Linear-BN-ReLU-Linear-BN (affine), as the reference code (3 linear layers).
* ``siam_proj`` / ``siam_pred`` (SiamLIP): projector Linear-BN-ReLU-Linear-BN(no affine), predictor
  Linear-BN-ReLU-Linear, one per modality; ``siam_target`` (BYOLIP) from an EMA copy of both towers and the
  SiamLIP projectors (``siam_momentum_encoder=True``; :class:`hf_contrastive.trainers.ema.EMAUpdate` updates it).

``embed_column(column, features)`` is the ``MultiModalTrainer`` contract: ``image`` / ``text`` give
``{"embedding": global projection, <ssl heads>}``, ``image_view_k`` / ``text_view_k`` give
``{"embedding": local projector output, <ssl heads>}``; the trainer names them ``column`` and ``column.head``.

The CLIP inside is saved with the wrapper and usable alone: ``model.clip.save_pretrained(path)`` writes a plain
``CLIPModel``. Registered with ``AutoConfig`` / ``AutoModel`` as ``clip-rocket``.

BatchNorm (local projectors with ``local_projector_norm="batch"``, Barlow and SiamLIP heads) normalises over the rows
one forward sees, so such a model is not exact under the gradient cache (``supports_gradient_cache`` is False), and
needs ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` under DDP for global-batch statistics (as the reference).
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Iterator
from functools import partial

import torch
from torch import nn
from transformers import CLIPConfig, CLIPModel, PretrainedConfig, PreTrainedModel

MODALITIES = ("image", "text")
PROJECTOR_NORMS = ("batch", "layer", "none")
_COLUMN = re.compile(r"^(image|text)(?:_view_(\d+))?$")


class CLIPRocketConfig(PretrainedConfig):
    """Config of a :class:`CLIPRocketModel`.

    Args:
        clip_config: the wrapped ``CLIPConfig`` (or its dict).
        local_projection_dim: output size of the local projectors (default: CLIP's ``projection_dim``).
        local_hidden_size: hidden size of the local projectors (paper: 4096; default ``min(4096, 4 * width)``
            with ``width`` the larger tower width, so small models get small heads).
        local_projector_norm: ``"batch"`` (reference), ``"layer"`` or ``"none"`` between the projector's layers.
        separate_local_projector: local views get their own MLP projectors (CLIP-rocket's ``--separate-proj``);
            False projects them with CLIP's linear projections (the paper's "CLIP + augmentations" ablation).
        text_dropout: dropout on each text layer's input in local mode (reference: 0 on YFCC, 0.05 on CC12M,
            0.2 on CC3M).
        text_drop_path: drop-path probability of each text layer's attention and MLP branches in local mode.
        barlow_dim / barlow_hidden_size: BarLIP head (paper: 8192 / 3000); ``None``: no head.
        siam_dim / siam_hidden_size: SiamLIP projector + predictor (paper: 128 / 2048); ``None``: no head.
        siam_momentum_encoder: keep an EMA copy of the towers and SiamLIP projectors for BYOLIP targets.
    """

    model_type = "clip-rocket"
    sub_configs = {"clip_config": CLIPConfig}

    def __init__(
        self,
        clip_config: CLIPConfig | dict | None = None,
        local_projection_dim: int | None = None,
        local_hidden_size: int | None = None,
        local_projector_norm: str = "batch",
        separate_local_projector: bool = True,
        text_dropout: float = 0.0,
        text_drop_path: float = 0.0,
        barlow_dim: int | None = None,
        barlow_hidden_size: int | None = None,
        siam_dim: int | None = None,
        siam_hidden_size: int | None = None,
        siam_momentum_encoder: bool = False,
        **kwargs,
    ) -> None:
        if isinstance(clip_config, dict):
            clip_config = CLIPConfig(**clip_config)
        if local_projector_norm not in PROJECTOR_NORMS:
            raise ValueError(f"local_projector_norm must be one of {PROJECTOR_NORMS}, got {local_projector_norm!r}.")
        for name, value in (("text_dropout", text_dropout), ("text_drop_path", text_drop_path)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}.")
        if siam_momentum_encoder and siam_dim is None:
            raise ValueError("siam_momentum_encoder (BYOLIP targets) needs the SiamLIP head: set siam_dim.")
        self.clip_config = clip_config
        self.local_projection_dim = local_projection_dim
        self.local_hidden_size = local_hidden_size
        self.local_projector_norm = local_projector_norm
        self.separate_local_projector = separate_local_projector
        self.text_dropout = text_dropout
        self.text_drop_path = text_drop_path
        self.barlow_dim = barlow_dim
        self.barlow_hidden_size = barlow_hidden_size
        self.siam_dim = siam_dim
        self.siam_hidden_size = siam_hidden_size
        self.siam_momentum_encoder = siam_momentum_encoder
        super().__init__(**kwargs)

    def tower_width(self, modality: str) -> int:
        """Width of the pooled features of the ``"image"`` or ``"text"`` tower."""
        tower = self.clip_config.vision_config if modality == "image" else self.clip_config.text_config
        return tower.hidden_size

    def resolved_local_sizes(self) -> tuple[int, int]:
        """``(hidden, output)`` sizes of the local projectors, with the defaults filled in."""
        width = max(self.tower_width(m) for m in MODALITIES)
        hidden = self.local_hidden_size or min(4096, 4 * width)
        return hidden, self.local_projection_dim or self.clip_config.projection_dim


def _normalization(kind: str, size: int) -> nn.Module:
    return {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}[kind](size) if kind != "none" else nn.Identity()


def local_projector(in_dim: int, hidden: int, out_dim: int, norm: str = "batch", layers: int = 3) -> nn.Sequential:
    """The reference's ``_build_mlp``: (Linear-Norm-ReLU) x (layers - 1), then Linear: [n, in_dim] -> [n, out_dim]."""
    blocks: list[nn.Module] = []
    for index in range(layers - 1):
        blocks += [nn.Linear(in_dim if index == 0 else hidden, hidden), _normalization(norm, hidden), nn.ReLU()]
    return nn.Sequential(*blocks, nn.Linear(hidden, out_dim))


def barlow_projector(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """BarLIP head: Linear-BN-ReLU-Linear-BN-ReLU-Linear-BN (affine): [n, in_dim] -> [n, out_dim] standardised."""
    return nn.Sequential(local_projector(in_dim, hidden, out_dim, "batch"), nn.BatchNorm1d(out_dim))


def siam_projector(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """SiamLIP projector: Linear-BN-ReLU-Linear (no biases), then BatchNorm without affine."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Linear(hidden, out_dim, bias=False),
        nn.BatchNorm1d(out_dim, affine=False),
    )


def siam_predictor(dim: int, hidden: int) -> nn.Sequential:
    """SiamLIP predictor (one per source modality): Linear-BN-ReLU-Linear, [n, dim] -> [n, dim]."""
    return nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, dim))


def drop_path(branch: torch.Tensor, probability: float) -> torch.Tensor:
    """Zero a residual branch [n, ...] per sample with ``probability``; scale survivors by ``1 / (1 - p)``."""
    keep = 1.0 - probability
    mask = branch.new_empty((branch.shape[0],) + (1,) * (branch.dim() - 1)).bernoulli_(keep)
    return branch * mask / keep


def _dropout_layer_input(probability: float, module, args, kwargs):
    """Forward pre-hook: dropout on a layer's input hidden states (the reference's in-place ``self.dropout(x)``)."""
    if "hidden_states" in kwargs:
        return args, {**kwargs, "hidden_states": nn.functional.dropout(kwargs["hidden_states"], probability)}
    return (nn.functional.dropout(args[0], probability), *args[1:]), kwargs


def _drop_path_output(probability: float, module, args, output):
    """Forward hook: drop-path on an attention (tuple output) or MLP (tensor output) residual branch."""
    if isinstance(output, tuple):
        return (drop_path(output[0], probability), *output[1:])
    return drop_path(output, probability)


class CLIPRocketModel(PreTrainedModel):
    """A ``CLIPModel`` with CLIP-rocket's local projectors, text local mode and optional BarLIP / SiamLIP heads."""

    config_class = CLIPRocketConfig
    base_model_prefix = "clip"
    main_input_name = "pixel_values"

    def __init__(self, config: CLIPRocketConfig) -> None:
        super().__init__(config)
        self.clip = CLIPModel(config.clip_config)
        hidden, out_dim = config.resolved_local_sizes()
        widths = {m: config.tower_width(m) for m in MODALITIES}
        if config.separate_local_projector:
            norm = config.local_projector_norm
            self.local_projectors = nn.ModuleDict(
                {m: local_projector(widths[m], hidden, out_dim, norm) for m in MODALITIES}
            )
        if config.barlow_dim:
            barlow_hidden = config.barlow_hidden_size or hidden
            self.barlow_projectors = nn.ModuleDict(
                {m: barlow_projector(widths[m], barlow_hidden, config.barlow_dim) for m in MODALITIES}
            )
        if config.siam_dim:
            siam_hidden = config.siam_hidden_size or hidden
            self.siam_projectors = nn.ModuleDict(
                {m: siam_projector(widths[m], siam_hidden, config.siam_dim) for m in MODALITIES}
            )
            self.siam_predictors = nn.ModuleDict({m: siam_predictor(config.siam_dim, siam_hidden) for m in MODALITIES})
        if config.siam_momentum_encoder:
            self.momentum_encoder = copy.deepcopy(self.online_encoder()).requires_grad_(False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """The heads keep PyTorch's default initialisation; the CLIP inside initialises itself."""

    @classmethod
    def from_clip(cls, clip: CLIPModel, **config_kwargs) -> CLIPRocketModel:
        """Wrap an existing (pretrained or freshly initialised) ``CLIPModel``; ``config_kwargs`` go to the config."""
        model = cls(CLIPRocketConfig(clip.config, **config_kwargs))
        model.clip = clip
        model.reset_momentum_encoder()
        return model

    # ------------------------------------------------------------------------------------------- momentum (BYOLIP)
    def online_encoder(self) -> nn.ModuleDict:
        """The modules the momentum encoder tracks: both towers and the SiamLIP projectors (same structure)."""
        return nn.ModuleDict(
            {
                "vision_model": self.clip.vision_model,
                "text_model": self.clip.text_model,
                "siam_projectors": self.siam_projectors,
            }
        )

    @torch.no_grad()
    def reset_momentum_encoder(self) -> None:
        """Copy the online weights into the momentum encoder (at construction, or after replacing ``clip``)."""
        if self.config.siam_momentum_encoder:
            self.momentum_encoder.load_state_dict(self.online_encoder().state_dict())

    # ------------------------------------------------------------------------------------------- local mode
    @contextlib.contextmanager
    def local_text_mode(self) -> Iterator[None]:
        """Within the block, training passes of the text tower use the local-mode dropout and drop-path.

        Implemented with hooks on the text encoder layers that are removed on exit, so the global branch and
        evaluation passes are untouched. No-op in eval mode or when both probabilities are 0.
        """
        handles = []
        if self.training:
            for layer in self.clip.text_model.encoder.layers:
                if self.config.text_dropout > 0:
                    hook = partial(_dropout_layer_input, self.config.text_dropout)
                    handles.append(layer.register_forward_pre_hook(hook, with_kwargs=True))
                if self.config.text_drop_path > 0:
                    hook = partial(_drop_path_output, self.config.text_drop_path)
                    handles += [layer.self_attn.register_forward_hook(hook), layer.mlp.register_forward_hook(hook)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    # ------------------------------------------------------------------------------------------- embedding
    @property
    def logit_scale(self) -> nn.Parameter:
        """CLIP's ``logit_scale`` (the trainer syncs the objective's global temperature with it)."""
        return self.clip.logit_scale

    @property
    def supports_gradient_cache(self) -> bool:
        """False when a BatchNorm is in use: its batch statistics change with the cache's mini-batches."""
        return not any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in self.modules())

    @staticmethod
    def parse_column(column: str) -> tuple[str, bool]:
        """``(modality, is_local_view)`` of ``image``, ``text``, ``image_view_k`` or ``text_view_k``."""
        match = _COLUMN.match(column)
        if match is None:
            raise ValueError(
                f"CLIPRocketModel embeds the columns 'image', 'text', 'image_view_<k>' and 'text_view_<k>'; "
                f"got {column!r}."
            )
        return match.group(1), match.group(2) is not None

    def pooled_features(self, modality: str, features: dict[str, torch.Tensor], tower_owner=None) -> torch.Tensor:
        """Pooled tower output [n, width]: the vision CLS state (``pixel_values``) or the text EOS state.

        ``tower_owner``: the module holding ``vision_model`` / ``text_model`` (``clip``, or the momentum encoder).
        """
        owner = self.clip if tower_owner is None else tower_owner
        if modality == "image":
            if "pixel_values" not in features:
                raise ValueError(f"Image columns need 'pixel_values' features; got {sorted(features)}.")
            return owner.vision_model(pixel_values=features["pixel_values"]).pooler_output
        if "input_ids" not in features:
            raise ValueError(f"Text columns need 'input_ids' (and 'attention_mask') features; got {sorted(features)}.")
        return owner.text_model(
            input_ids=features["input_ids"], attention_mask=features.get("attention_mask")
        ).pooler_output

    def embed_column(self, column: str, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Embed one column: ``{"embedding": [n, D], "barlow": ..., "siam_proj": ..., "siam_pred": ...,
        "siam_target": ...}`` (heads present when configured).

        ``image`` / ``text``: CLIP's global projection. ``{image,text}_view_k``: the local projector; text views
        run in :meth:`local_text_mode`.
        """
        modality, is_view = self.parse_column(column)
        local_mode = self.local_text_mode() if is_view and modality == "text" else contextlib.nullcontext()
        with local_mode:
            pooled = self.pooled_features(modality, features)
        if is_view and self.config.separate_local_projector:
            embedding = self.local_projectors[modality](pooled)
        else:
            projection = self.clip.visual_projection if modality == "image" else self.clip.text_projection
            embedding = projection(pooled)
        outputs = {"embedding": embedding}
        if self.config.barlow_dim:
            outputs["barlow"] = self.barlow_projectors[modality](pooled)
        if self.config.siam_dim:
            outputs["siam_proj"] = self.siam_projectors[modality](pooled)
            outputs["siam_pred"] = self.siam_predictors[modality](outputs["siam_proj"])
        if self.config.siam_momentum_encoder:
            with torch.no_grad():
                target_pooled = self.pooled_features(modality, features, self.momentum_encoder)
                outputs["siam_target"] = self.momentum_encoder["siam_projectors"][modality](target_pooled)
        return outputs

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Global embeddings: ``{"image_embeds": [n, D]}`` and/or ``{"text_embeds": [m, D]}`` (unnormalised)."""
        outputs = {}
        if pixel_values is not None:
            outputs["image_embeds"] = self.embed_column("image", {"pixel_values": pixel_values})["embedding"]
        if input_ids is not None:
            text = {"input_ids": input_ids, "attention_mask": attention_mask}
            outputs["text_embeds"] = self.embed_column("text", text)["embedding"]
        return outputs
