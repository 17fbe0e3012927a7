"""MoCoOp prompt learner on a frozen CLIP: expert soft prompts, a top-2 router, hard-prompt prototypes.

Build it from a CLIP and its tokenizer with :meth:`MoCoOpModel.from_clip`; train it with
:class:`hf_contrastive.trainers.prompt_learning.PromptLearningTrainer` (or a plain ``transformers.Trainer``: the
forward returns the loss); save it with ``save_pretrained``. The saved folder holds only the prompt learner (expert
contexts, correction bias ``w``, router, group prototypes, and the vision LayerNorm affines when fine-tuned) and the
config, which names the frozen CLIP (``clip_name_or_path``) and stores the tokenized class names, so no tokenizer
is needed to predict over the known classes::

    model = MoCoOpModel.from_pretrained(folder)                   # loads the CLIP from config.clip_name_or_path
    model = MoCoOpModel.from_pretrained(folder, clip_model=clip)  # or reuses a CLIP already in memory
    logits = model(pixel_values, classnames=["five", "six"]).logits

The CLIP is held outside the module tree (not a submodule): it is not saved, not in ``parameters()`` (so no
optimizer or DDP sees it) and moves with the model's ``.to()``. Math: :mod:`hf_contrastive.objectives.mocoop`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import accumulate

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from transformers import CLIPModel, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import ModelOutput

from ..objectives.mocoop import MoCoOpLoss, group_prototypes, mix_expert_features, top_k_routing
from .clip import image_embeddings, text_embeddings
from .prompting import (
    PromptLayout,
    PromptSpecialIds,
    build_prompt_layout,
    class_token_ids,
    encode_prompts,
    prompt_special_ids,
    template_context_words,
    word_embeddings,
)


class MoCoOpConfig(PretrainedConfig):
    """Config of a :class:`MoCoOpModel`; build it through :meth:`MoCoOpModel.from_clip`, which fills the derived fields.

    Args:
        clip_name_or_path: the frozen CLIP the prompts were trained on (loaded by ``from_pretrained``).
        classnames: the training classes (base classes); labels index this list.
        all_classnames: the class names of the text-to-text loss (base + novel in base-to-new runs, as LASP; a
            caveat: novel names, not images, are seen in training). Defaults to ``classnames``.
        templates: hand-written prompts with one ``{}`` for the class name, grouped consecutively by ``groups``.
        groups: group sizes over ``templates``; one expert per group, initialised from its group's first template.
        router_top_k: experts mixed per image (2; named so as not to clash with the generation option top_k).
        text_loss_weight / gate_loss_weight: lambda_text (5 in the released configs) and lambda_gate (1).
        detach_gate_target: stop the gradient through the gate target (False: as the released code).
        enable_correction: the learnable bias ``w`` added to every expert's text feature (True in all configs).
        finetune_vision_layernorm: train the affine parameters of the vision blocks' two LayerNorms
            (``FINETUNE_VIT_LN``, True in the released configs); they are saved with the prompt learner.

    Derived (set by ``from_clip``): ``class_token_ids`` (per name of ``all_classnames``), ``context_lengths``
    ([n_before, n_after] per expert), ``special_token_ids`` ({sos, eos, pad}), ``max_text_length``,
    ``text_hidden_size``, ``projection_dim``, ``vision_num_layers``, ``vision_hidden_size``.
    """

    model_type = "mocoop"
    keys_to_ignore_at_inference = ["expert_text_features", "image_features", "topk_indices", "topk_weights"]

    def __init__(
        self,
        clip_name_or_path: str | None = None,
        classnames: list[str] | None = None,
        all_classnames: list[str] | None = None,
        templates: list[str] | None = None,
        groups: list[int] | None = None,
        router_top_k: int = 2,
        text_loss_weight: float = 5.0,
        gate_loss_weight: float = 1.0,
        detach_gate_target: bool = False,
        enable_correction: bool = True,
        finetune_vision_layernorm: bool = True,
        class_token_ids: list[list[int]] | None = None,
        context_lengths: list[list[int]] | None = None,
        special_token_ids: dict[str, int] | None = None,
        max_text_length: int | None = None,
        text_hidden_size: int | None = None,
        projection_dim: int | None = None,
        vision_num_layers: int | None = None,
        vision_hidden_size: int | None = None,
        **kwargs,
    ) -> None:
        self.clip_name_or_path = clip_name_or_path
        self.classnames = list(classnames or [])
        self.all_classnames = list(all_classnames or self.classnames)
        self.templates = list(templates or [])
        self.groups = list(groups) if groups is not None else ([len(self.templates)] if self.templates else [])
        self.router_top_k = router_top_k
        self.text_loss_weight = text_loss_weight
        self.gate_loss_weight = gate_loss_weight
        self.detach_gate_target = detach_gate_target
        self.enable_correction = enable_correction
        self.finetune_vision_layernorm = finetune_vision_layernorm
        self.class_token_ids = class_token_ids
        self.context_lengths = context_lengths
        self.special_token_ids = special_token_ids
        self.max_text_length = max_text_length
        self.text_hidden_size = text_hidden_size
        self.projection_dim = projection_dim
        self.vision_num_layers = vision_num_layers
        self.vision_hidden_size = vision_hidden_size
        if self.templates:
            self._validate()
        super().__init__(**kwargs)

    def _validate(self) -> None:
        for template in self.templates:
            template_context_words(template)
        if sum(self.groups) != len(self.templates) or min(self.groups) < 1:
            raise ValueError(
                f"groups {self.groups} must be positive sizes summing to the {len(self.templates)} templates."
            )
        unknown = [name for name in self.classnames if name not in self.all_classnames]
        if unknown:
            raise ValueError(f"classnames {unknown} are missing from all_classnames {self.all_classnames}.")
        if self.router_top_k < 1:
            raise ValueError(f"router_top_k must be >= 1, got {self.router_top_k}.")

    @property
    def num_experts(self) -> int:
        return len(self.groups)


@dataclass
class MoCoOpOutput(ModelOutput):
    """``logits`` [B, C] (scaled by CLIP's logit scale), ``router_logits`` [B, E], ``topk_indices`` /
    ``topk_weights`` [B, K], ``expert_text_features`` [E, C, D], ``image_features`` [B, D] (normalised); with labels,
    ``loss`` and its terms ``loss_ce``, ``loss_text``, ``loss_gate`` (None when their weight is 0)."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    router_logits: torch.FloatTensor | None = None
    topk_indices: torch.LongTensor | None = None
    topk_weights: torch.FloatTensor | None = None
    expert_text_features: torch.FloatTensor | None = None
    image_features: torch.FloatTensor | None = None
    loss_ce: torch.FloatTensor | None = None
    loss_text: torch.FloatTensor | None = None
    loss_gate: torch.FloatTensor | None = None


def _vision_layernorm_names(num_layers: int) -> list[str]:
    """Names (relative to ``CLIPModel.vision_model``) of the vision blocks' LayerNorm affine parameters."""
    return [
        f"encoder.layers.{layer}.{norm}.{kind}"
        for layer in range(num_layers)
        for norm in ("layer_norm1", "layer_norm2")
        for kind in ("weight", "bias")
    ]


class MoCoOpModel(PreTrainedModel):
    """Mixture of expert soft prompts with a top-k router over a frozen CLIP (MoCoOp, arXiv 2409.12011).

    Trainable: ``ctx_before[e]`` [n_before_e, H], ``ctx_after[e]`` [n_after_e, H], ``router`` (Linear D -> E),
    ``correction`` w [D], and (``finetune_vision_layernorm``) the vision LayerNorm affines. Buffer: ``prototypes``
    P [E, C_all, D], the normalised mean of each group's hard-prompt features.
    """

    config_class = MoCoOpConfig
    base_model_prefix = "mocoop"
    main_input_name = "pixel_values"

    def __init__(self, config: MoCoOpConfig, clip_model: CLIPModel | None = None) -> None:
        super().__init__(config)
        self.__dict__["_clip"] = None
        hidden, dim = config.text_hidden_size, config.projection_dim
        self.ctx_before = nn.ParameterList(torch.zeros(n_before, hidden) for n_before, _ in config.context_lengths)
        self.ctx_after = nn.ParameterList(torch.zeros(n_after, hidden) for _, n_after in config.context_lengths)
        self.router = nn.Linear(dim, config.num_experts)
        self.correction = nn.Parameter(torch.zeros(dim)) if config.enable_correction else None
        names = _vision_layernorm_names(config.vision_num_layers) if config.finetune_vision_layernorm else []
        self.vision_layernorms = nn.ParameterDict(
            {_parameter_key(name): torch.zeros(config.vision_hidden_size) for name in names}
        )
        self.register_buffer("prototypes", torch.zeros(config.num_experts, len(config.all_classnames), dim))
        self.objective = MoCoOpLoss(
            config.text_loss_weight, config.gate_loss_weight, config.router_top_k, config.detach_gate_target
        )
        self._layouts: dict[torch.device, list[PromptLayout]] = {}
        self.post_init()
        if clip_model is not None:
            self.attach_clip(clip_model)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------------------------------ building / loading
    @classmethod
    def from_clip(
        cls,
        clip_model: CLIPModel,
        tokenizer: PreTrainedTokenizerBase,
        classnames: list[str],
        templates: list[str],
        groups: list[int],
        all_classnames: list[str] | None = None,
        clip_name_or_path: str | None = None,
        **options,
    ) -> MoCoOpModel:
        """A prompt learner for ``clip_model``: contexts from each group's first template, prototypes from all.

        ``options`` are the other :class:`MoCoOpConfig` fields (``router_top_k``, loss weights, flags).
        """
        all_classnames = list(all_classnames or classnames)
        text_config, vision_config = clip_model.config.text_config, clip_model.config.vision_config
        first_templates = [templates[start] for start in accumulate([0, *groups[:-1]])]
        context_words = [template_context_words(template) for template in first_templates]
        config = MoCoOpConfig(
            clip_name_or_path=clip_name_or_path or getattr(clip_model.config, "_name_or_path", None) or None,
            classnames=classnames,
            all_classnames=all_classnames,
            templates=templates,
            groups=groups,
            class_token_ids=class_token_ids(tokenizer, all_classnames),
            context_lengths=[[_token_count(tokenizer, words) for words in pair] for pair in context_words],
            special_token_ids=asdict(prompt_special_ids(tokenizer)),
            max_text_length=text_config.max_position_embeddings,
            text_hidden_size=text_config.hidden_size,
            projection_dim=clip_model.config.projection_dim,
            vision_num_layers=vision_config.num_hidden_layers,
            vision_hidden_size=vision_config.hidden_size,
            **options,
        )
        model = cls(config, clip_model=clip_model)
        model._layout(0)  # lays out every expert's prompts: a class name too long for the text tower fails here
        with torch.no_grad():
            for expert, (before, after) in enumerate(context_words):
                model.ctx_before[expert].copy_(word_embeddings(clip_model, tokenizer, before))
                model.ctx_after[expert].copy_(word_embeddings(clip_model, tokenizer, after))
            model.prototypes.copy_(hard_prompt_prototypes(clip_model, tokenizer, templates, groups, all_classnames))
            vision_parameters = dict(clip_model.vision_model.named_parameters())
            for name in _vision_layernorm_names(vision_config.num_hidden_layers) if model.vision_layernorms else []:
                model.vision_layernorms[_parameter_key(name)].copy_(vision_parameters[name])
        return model

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path, *model_args, clip_model: CLIPModel | None = None, **kwargs
    ):
        """Load the prompt learner, then attach ``clip_model`` or the CLIP at ``config.clip_name_or_path``."""
        model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        if clip_model is None:
            if not model.config.clip_name_or_path:
                raise ValueError(
                    "This MoCoOp model's config has no clip_name_or_path; pass the frozen CLIP as clip_model=."
                )
            clip_model = CLIPModel.from_pretrained(model.config.clip_name_or_path)
        model.attach_clip(clip_model)
        return model

    def attach_clip(self, clip_model: CLIPModel) -> None:
        """Use ``clip_model`` (frozen, eval mode, moved to this model's device) as the backbone."""
        expected = (self.config.projection_dim, self.config.text_hidden_size)
        found = (clip_model.config.projection_dim, clip_model.config.text_config.hidden_size)
        if found != expected:
            raise ValueError(
                f"CLIP (projection_dim, text hidden size) {found} does not match the prompts' {expected}."
            )
        device = self.router.weight.device
        self.__dict__["_clip"] = clip_model.requires_grad_(False).eval().to(device)

    @property
    def clip(self) -> CLIPModel:
        if self._clip is None:
            raise RuntimeError("No CLIP attached: build with MoCoOpModel.from_clip or load with from_pretrained.")
        return self._clip

    def _apply(self, fn, recurse: bool = True):
        # The CLIP is not a submodule (so it is neither saved nor optimised), but it must follow .to() / .half().
        if self._clip is not None:
            self._clip._apply(fn, recurse)
        return super()._apply(fn, recurse)

    # ------------------------------------------------------------------------------------------ features
    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised CLIP image features f [B, D], with the prompt learner's vision LayerNorm affines."""
        if not self.vision_layernorms:
            return F.normalize(image_embeddings(self.clip, pixel_values), dim=-1)
        names = _vision_layernorm_names(self.config.vision_num_layers)
        overrides = {name: self.vision_layernorms[_parameter_key(name)] for name in names}
        vision = self.clip.vision_model
        pixel_values = pixel_values.to(vision.embeddings.patch_embedding.weight.dtype)
        pooled = functional_call(vision, overrides, args=(), kwargs={"pixel_values": pixel_values}).pooler_output
        return F.normalize(self.clip.visual_projection(pooled), dim=-1)

    def expert_text_features(self) -> torch.Tensor:
        """``T_{e,c} = normalize(CLIP_txt(prompt_e(c)) + w)`` for every name of ``all_classnames``: [E, C_all, D]."""
        features = torch.stack(
            [
                encode_prompts(self.clip, self._layout(expert), self.ctx_before[expert], self.ctx_after[expert])
                for expert in range(self.config.num_experts)
            ]
        )
        if self.correction is not None:
            features = features + self.correction
        return F.normalize(features, dim=-1)

    def _layout(self, expert: int) -> PromptLayout:
        """Expert ``expert``'s prompt layout over ``all_classnames``, built once per device (never under the meta
        device that ``from_pretrained`` builds the module on)."""
        device = self.router.weight.device
        if device not in self._layouts:
            config = self.config
            special = PromptSpecialIds(**config.special_token_ids)
            self._layouts[device] = [
                build_prompt_layout(
                    config.class_token_ids, n_before, n_after, special, config.max_text_length, config.all_classnames
                ).to(device)
                for n_before, n_after in config.context_lengths
            ]
        return self._layouts[device][expert]

    def class_indices(self, classnames: list[str] | None = None) -> torch.Tensor:
        """Positions in ``all_classnames`` of ``classnames`` (default: the training ``classnames``) [C]."""
        classnames = self.config.classnames if classnames is None else classnames
        unknown = [name for name in classnames if name not in self.config.all_classnames]
        if unknown:
            raise ValueError(
                f"Class names {unknown} are unknown to this prompt learner (all_classnames: "
                f"{self.config.all_classnames}); rebuild it with them in all_classnames."
            )
        indices = [self.config.all_classnames.index(name) for name in classnames]
        return torch.tensor(indices, dtype=torch.long, device=self.router.weight.device)

    # ------------------------------------------------------------------------------------------ forward
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        classnames: list[str] | None = None,
    ) -> MoCoOpOutput:
        """Route each image to its top-k experts and score it against their mixed class features.

        ``pixel_values`` [B, 3, S, S]; ``labels`` [B] index ``classnames`` (default: the training classes);
        ``classnames`` picks the evaluated class set among ``all_classnames`` (e.g. the novel classes).
        """
        class_index = self.class_indices(classnames)
        if labels is not None and labels.numel() and (labels.min() < 0 or labels.max() >= len(class_index)):
            raise ValueError(
                f"labels must lie in [0, {len(class_index)}) (one per class of {len(class_index)}); got values from "
                f"{int(labels.min())} to {int(labels.max())}."
            )
        image_features = self.image_features(pixel_values)
        router_logits = self.router(image_features.to(self.router.weight.dtype))
        topk_indices, topk_weights = top_k_routing(router_logits, self.config.router_top_k)
        expert_all = self.expert_text_features()
        expert_features = expert_all[:, class_index]
        mixed = mix_expert_features(expert_features, topk_indices, topk_weights)
        scale = self.clip.logit_scale.exp()
        logits = scale * torch.einsum("bd,bcd->bc", image_features.to(mixed.dtype), mixed)
        output = MoCoOpOutput(
            logits=logits,
            router_logits=router_logits,
            topk_indices=topk_indices,
            topk_weights=topk_weights,
            expert_text_features=expert_features,
            image_features=image_features,
        )
        if labels is not None:
            label_prototypes = self.prototypes[:, class_index[labels]].transpose(0, 1)
            terms = self.objective(
                logits, labels, router_logits, image_features, label_prototypes, expert_all, self.prototypes
            )
            output.loss = terms.loss
            output.loss_ce, output.loss_text, output.loss_gate = (
                terms.logs.get(key) for key in ("loss_ce", "loss_text", "loss_gate")
            )
        return output


def _parameter_key(name: str) -> str:
    """A ParameterDict key for a dotted parameter name (dots are not allowed in module attribute names)."""
    return name.replace(".", "__")


def _token_count(tokenizer: PreTrainedTokenizerBase, words: str) -> int:
    return len(tokenizer(words, add_special_tokens=False)["input_ids"]) if words else 0


@torch.no_grad()
def hard_prompt_features(
    clip_model: CLIPModel, tokenizer: PreTrainedTokenizerBase, templates: list[str], classnames: list[str]
) -> torch.Tensor:
    """Normalised CLIP text features h [P, C, D] of every template filled with every class name."""
    device = clip_model.logit_scale.device
    features = []
    for template in templates:
        encoded = tokenizer([template.format(name) for name in classnames], padding=True, return_tensors="pt")
        encoded = encoded.to(device)
        features.append(text_embeddings(clip_model, encoded["input_ids"], encoded["attention_mask"]))
    return F.normalize(torch.stack(features), dim=-1)


def hard_prompt_prototypes(
    clip_model: CLIPModel,
    tokenizer: PreTrainedTokenizerBase,
    templates: list[str],
    groups: list[int],
    classnames: list[str],
) -> torch.Tensor:
    """Group prototypes P [G, C, D] of the hard prompts (the gate and text-loss targets)."""
    return group_prototypes(hard_prompt_features(clip_model, tokenizer, templates, classnames), groups)
