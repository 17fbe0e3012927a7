"""AnswerTokenReranker: a causal or masked LM that scores a (query, document) pair by its "yes"/"no" answer logits.

The model reads ``prompt_template(instruction, query, document)`` and is read at the *answer position*:

- causal LM (``AutoModelForCausalLM``): the last real token of the prompt (its next-token distribution is the
  answer). Found through the attention mask, with position ids counted from the first real token, so left- and
  right-padded batches give the same logits.
- masked LM (``AutoModelForMaskedLM``): the mask token appended to the prompt.

The LM head runs at that position only: a pre-hook on the output embeddings hands it the gathered hidden states
[N, 1, H] instead of [N, L, H], so the vocabulary projection costs N x V, not N x L x V, while the model is still
called through its own ``forward`` (so DDP, FSDP and PEFT wrappers see a normal call). Heads that rescale or soft-cap
their logits after the projection are applied as the model applies them.

``save_pretrained(dir)`` writes the model (or its PEFT adapter), the tokenizer and ``reranker_config.json``;
``AnswerTokenReranker.from_pretrained(dir)`` restores all three. A PEFT adapter reloads onto the base model named in
its ``adapter_config.json``.
"""

from __future__ import annotations

import inspect
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import ModelCard, ModelCardData
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

from ..data.reranking import (
    DEFAULT_INSTRUCTION,
    DEFAULT_PROMPT_TEMPLATE,
    RerankerCollator,
    answer_token_id,
    check_prompt_template,
    render_prompt,
)
from ..hub import HF_CONTRASTIVE_CITATION, CardEvalResult, framework_versions, push_folder, split_non_default_args
from ..hub.card import (  # the encoder card's renderers, shared rather than copied
    bullets,
    dataset_link,
    dataset_section,
    evaluation_table,
    format_value,
    is_hub_id,
    model_link,
)
from ..objectives.reranking import CITATION, NAME, PAPER, SCORE_KINDS, relevance_scores

if TYPE_CHECKING:
    from transformers import TrainingArguments

CONFIG_NAME = "reranker_config.json"
MODEL_KINDS = ("causal", "masked")
_AUTO_CLASSES = {"causal": AutoModelForCausalLM, "masked": AutoModelForMaskedLM}


@dataclass
class RerankerSettings:
    """How a reranker renders its prompt and reads its answer (saved in ``reranker_config.json``).

    Args:
        prompt_template: format string with ``{instruction}``, ``{query}`` (at least once) and ``{document}``
            (exactly once). For a causal LM the answer is the token that follows it; a masked LM gets its mask
            token appended.
        instruction: the ``{instruction}`` of rows that bring none.
        yes_token, no_token: the exact answer strings; each must be one token of the tokenizer ("yes", " yes" and
            "Yes" differ).
        score: the inference score: "sft" (``sigmoid(z_y - z_n)``, two-way SFT models), "yes_logit" (``z_y``, CL
            models) or "yes_logprob" (``log softmax_vocab(z)_yes``, full-vocabulary SFT models).
        max_length: tokens per prompt; longer prompts lose the end of their document, never the template's end.
    """

    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    instruction: str = DEFAULT_INSTRUCTION
    yes_token: str = "yes"
    no_token: str = "no"
    score: str = "sft"
    max_length: int = 512

    def __post_init__(self) -> None:
        check_prompt_template(self.prompt_template)
        if self.score not in SCORE_KINDS:
            raise ValueError(f"score must be one of {list(SCORE_KINDS)}, got {self.score!r}.")
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {self.max_length}.")
        if self.yes_token == self.no_token:
            raise ValueError(f"yes_token and no_token must differ, both are {self.yes_token!r}.")


def detect_model_kind(model: nn.Module) -> str:
    """``"causal"`` or ``"masked"`` from the (PEFT-unwrapped) model's class; a ValueError for anything else."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    name = type(base).__name__
    if name in MODEL_FOR_MASKED_LM_MAPPING_NAMES.values():
        return "masked"
    if name in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        return "causal"
    raise ValueError(
        f"AnswerTokenReranker needs a causal LM (AutoModelForCausalLM) or a masked LM (AutoModelForMaskedLM), got "
        f"{name}. Pass model_kind='causal' or 'masked' if this class is one of them."
    )


def _tokenizer_class(name: str | None):
    """The tokenizer class saved in the config, else AutoTokenizer.

    A generic tokenizer (``TokenizersBackend``) must reload as such: ``AutoTokenizer`` would swap in the model type's
    own class (e.g. ``Qwen2Tokenizer``), which rebuilds the pipeline and may split the answer tokens differently.
    """
    import transformers

    return (getattr(transformers, name, None) if name else None) or AutoTokenizer


class AnswerTokenReranker(nn.Module):
    """A pointwise reranker: LM + tokenizer + :class:`RerankerSettings`, scored at the answer position.

    Args:
        model: a causal or masked LM (``PreTrainedModel``), PEFT-wrapped or not.
        tokenizer: its tokenizer (fast, so over-long documents can be shortened); it needs a pad token, and a mask
            token for a masked LM.
        settings: prompt, answer tokens and inference score.
        model_kind: "causal" or "masked"; detected from the model's class when omitted.

    ``score(queries, documents)`` is a pair scorer (``pair_scorer(queries, documents) -> list[float]``, higher =
    more relevant) for the reranking evaluators.
    """

    def __init__(self, model, tokenizer, settings: RerankerSettings | None = None, model_kind: str | None = None):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings or RerankerSettings()
        self.model_kind = model_kind or detect_model_kind(model)
        if self.model_kind not in MODEL_KINDS:
            raise ValueError(f"model_kind must be one of {list(MODEL_KINDS)}, got {self.model_kind!r}.")
        self.answer_token_ids = (
            answer_token_id(tokenizer, self.settings.yes_token),
            answer_token_id(tokenizer, self.settings.no_token),
        )
        self.training_info: dict[str, Any] = {}  # set by RerankerTrainer: loss settings, for the saved config/card
        self._check_tokenizer()
        base_forward = (model.get_base_model() if hasattr(model, "get_base_model") else model).forward
        self._takes_position_ids = "position_ids" in inspect.signature(base_forward).parameters

    def _check_tokenizer(self) -> None:
        vocab_rows = self.model.get_output_embeddings().weight.shape[0]
        if max(self.answer_token_ids) >= vocab_rows:
            raise ValueError(
                f"The answer token ids {self.answer_token_ids} exceed the LM head's {vocab_rows} rows: the tokenizer "
                "does not belong to this model."
            )
        if self.tokenizer.pad_token_id is None:
            raise ValueError("The tokenizer has no pad token: set tokenizer.pad_token (e.g. to its eos_token).")
        if self.model_kind == "masked" and self.tokenizer.mask_token is None:
            raise ValueError("A masked-LM reranker needs a tokenizer with a mask token (read at the answer position).")
        if self.model_kind == "causal":
            sample = render_prompt(self.settings.prompt_template, "query", "document", self.settings.instruction)
            last = self.tokenizer(sample)["input_ids"][-1]
            if last != self.tokenizer(sample, add_special_tokens=False)["input_ids"][-1]:
                raise ValueError(
                    f"The tokenizer appends the special token {self.tokenizer.convert_ids_to_tokens(last)!r} after the "
                    "prompt, so the last token would not be the answer position. Use a tokenizer that adds no special "
                    "token at the end (e.g. add_eos_token=False)."
                )

    # ----------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_model(
        cls, name_or_path: str, settings: RerankerSettings | None = None, model_kind: str = "causal", **model_kwargs
    ) -> AnswerTokenReranker:
        """A reranker around a pretrained LM (path or Hub id) and its tokenizer (pad token = eos if it has none)."""
        if model_kind not in MODEL_KINDS:
            raise ValueError(f"model_kind must be one of {list(MODEL_KINDS)}, got {model_kind!r}.")
        model = _AUTO_CLASSES[model_kind].from_pretrained(name_or_path, **model_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return cls(model, tokenizer, settings, model_kind)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        is_trainable: bool = False,
        revision: str | None = None,
        cache_dir: str | None = None,
        token: str | None = None,
        **model_kwargs,
    ) -> AnswerTokenReranker:
        """Reload what :meth:`save_pretrained` wrote (a local folder or a Hub repo); a PEFT adapter onto its base.

        ``is_trainable`` keeps a PEFT adapter trainable; ``model_kwargs`` go to the model's ``from_pretrained``.
        """
        folder = name_or_path
        if not os.path.isdir(folder):
            from huggingface_hub import snapshot_download

            folder = snapshot_download(name_or_path, revision=revision, cache_dir=cache_dir, token=token)
        config_path = os.path.join(folder, CONFIG_NAME)
        if not os.path.isfile(config_path):
            raise FileNotFoundError(
                f"{name_or_path!r} has no {CONFIG_NAME}: it was not saved by AnswerTokenReranker.save_pretrained. "
                "Wrap a plain LM with AnswerTokenReranker.from_model instead."
            )
        with open(config_path, encoding="utf-8") as handle:
            config = json.load(handle)
        auto_class = _AUTO_CLASSES[config["model_kind"]]
        if os.path.isfile(os.path.join(folder, "adapter_config.json")):
            from peft import PeftConfig, PeftModel

            base_name = PeftConfig.from_pretrained(folder).base_model_name_or_path
            model = PeftModel.from_pretrained(
                auto_class.from_pretrained(base_name, **model_kwargs), folder, is_trainable=is_trainable
            )
        else:
            model = auto_class.from_pretrained(folder, **model_kwargs)
        tokenizer = _tokenizer_class(config.get("tokenizer_class")).from_pretrained(folder)
        reranker = cls(model, tokenizer, RerankerSettings(**config["settings"]), config["model_kind"])
        reranker.training_info = config.get("training", {})
        return reranker

    def config_dict(self) -> dict[str, Any]:
        """The content of ``reranker_config.json``."""
        return {
            "model_kind": self.model_kind,
            "tokenizer_class": type(self.tokenizer).__name__,
            "settings": asdict(self.settings),
            "training": self.training_info,
        }

    def save_config(self, folder: str) -> None:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, CONFIG_NAME), "w", encoding="utf-8") as handle:
            json.dump(self.config_dict(), handle, indent=2)

    def save_pretrained(self, folder: str, **save_kwargs) -> None:
        """Write the model (or its PEFT adapter), the tokenizer and ``reranker_config.json`` into ``folder``."""
        self.model.save_pretrained(folder, **save_kwargs)
        self.tokenizer.save_pretrained(folder)
        self.save_config(folder)

    def push_to_hub(
        self,
        repo_id: str,
        token: str | None = None,
        private: bool | None = None,
        commit_message: str = "Upload AnswerTokenReranker",
        revision: str | None = None,
    ):
        """Upload model (or adapter), tokenizer and config to ``repo_id``, with a reranker card if it has none yet.

        A card already on the repo (for example ``RerankerTrainer``'s, which knows the data and the evaluation) is
        kept as it is.
        """
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder)
            if not api.file_exists(repo_id, "README.md", revision=revision):
                reranker_model_card(RerankerCardData.from_reranker(self, repo_id)).save(
                    os.path.join(folder, "README.md")
                )
            return push_folder(folder, repo_id, token=token, commit_message=commit_message, revision=revision)

    # ----------------------------------------------------------------------------------------------- forward
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def collator(self, max_negatives: int | None = None) -> RerankerCollator:
        """The collator that renders this reranker's prompts (group or pair rows)."""
        suffix = self.tokenizer.mask_token if self.model_kind == "masked" else ""
        return RerankerCollator(
            self.tokenizer,
            self.settings.prompt_template,
            self.settings.instruction,
            self.settings.max_length,
            prompt_suffix=suffix,
            max_negatives=max_negatives,
        )

    def answer_positions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Index of the answer position of each row [N]: the last real token (causal) or the last mask token."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        if self.model_kind == "causal":
            return (attention_mask * positions).argmax(dim=1)
        is_mask = input_ids == self.tokenizer.mask_token_id
        if not bool(is_mask.any(dim=1).all()):
            raise ValueError("A row of the batch has no mask token: masked-LM prompts must end with the mask token.")
        return (is_mask * positions).argmax(dim=1)

    def answer_logits(self, batch: dict[str, torch.Tensor], model: nn.Module | None = None) -> torch.Tensor:
        """Logits over the vocabulary at the answer position: ``input_ids`` / ``attention_mask`` [N, L] -> [N, V].

        ``model`` is the module to call (a DDP-wrapped copy of ``self.model`` during training); default the model.
        """
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        positions = self.answer_positions(input_ids, attention_mask)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)

        def gather_answer_position(_module, args):
            hidden = args[0]
            if hidden.shape[:2] != input_ids.shape:
                raise RuntimeError(
                    f"The LM head got hidden states of shape {tuple(hidden.shape)}, not one per input token "
                    f"{tuple(input_ids.shape)}: this model cannot be read at the answer position."
                )
            return (hidden[rows, positions].unsqueeze(1), *args[1:])

        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.model_kind == "causal" and self._takes_position_ids:
            inputs["position_ids"] = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)
        handle = self.model.get_output_embeddings().register_forward_pre_hook(gather_answer_position)
        try:
            logits = (model or self.model)(**inputs, use_cache=False).logits
        finally:
            handle.remove()
        return logits[:, 0]

    def yes_no_logits(self, batch: dict[str, torch.Tensor], model: nn.Module | None = None) -> torch.Tensor:
        """(z_y, z_n) at the answer position: [N, 2]."""
        return self.answer_logits(batch, model)[:, list(self.answer_token_ids)]

    def answer_rows(self) -> torch.Tensor:
        """The LM-head rows (w_yes, w_no): [2, H] (the update directions of the weight/direction analysis)."""
        return self.model.get_output_embeddings().weight[list(self.answer_token_ids)]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Inference scores [N] of a collated batch (see ``settings.score``)."""
        logits = self.answer_logits({"input_ids": input_ids, "attention_mask": attention_mask})
        return relevance_scores(logits, self.answer_token_ids, self.settings.score)

    @torch.no_grad()
    def score(
        self,
        queries: Sequence[str],
        documents: Sequence[str],
        batch_size: int = 32,
        instructions: Sequence[str | None] | None = None,
    ) -> list[float]:
        """Score (query, document) pairs, higher = more relevant: eval mode, no grad, length-sorted batches."""
        if isinstance(queries, str) or isinstance(documents, str):
            raise TypeError("score expects lists of queries and documents (one pair per position), not strings.")
        if len(queries) != len(documents) or (instructions is not None and len(instructions) != len(queries)):
            raise ValueError(
                f"score needs one document (and instruction) per query: got {len(queries)} queries, "
                f"{len(documents)} documents, {None if instructions is None else len(instructions)} instructions."
            )
        was_training = self.model.training
        self.model.eval()
        collator = self.collator()
        order = sorted(range(len(queries)), key=lambda i: len(queries[i]) + len(documents[i]), reverse=True)
        scores = [0.0] * len(queries)
        try:
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                features = collator.encode(
                    [queries[i] for i in chunk],
                    [documents[i] for i in chunk],
                    None if instructions is None else [instructions[i] for i in chunk],
                )
                values = self(**{key: value.to(self.device) for key, value in features.items()})
                for index, value in zip(chunk, values.float().cpu().tolist()):
                    scores[index] = value
        finally:
            self.model.train(was_training)
        return scores


# --------------------------------------------------------------------------------------------------- model card
SCORE_EXPLANATIONS = {
    "sft": '`sigmoid(z_yes - z_no)`: the two-way SFT probability of "yes" (the model was trained on both logits).',
    "yes_logit": (
        '`z_yes`, the "yes" logit alone. Training moved `z_yes` only (the contrastive direction) and left the "no" '
        "logit unconstrained, so do not score this model with `sigmoid(z_yes - z_no)`."
    ),
    "yes_logprob": (
        "`log softmax(z)_yes` over the whole vocabulary, the normalisation it was trained with; scores of a model "
        "trained with the two-way loss are not comparable with these."
    ),
}


@dataclass
class RerankerCardData:
    """What the reranker card shows; empty fields drop their section (see :func:`reranker_model_card`)."""

    settings: RerankerSettings
    answer_token_ids: tuple[int, int]
    model_kind: str = "causal"
    repo_id: str | None = None
    model_name: str | None = None
    base_model: str | None = None
    adapter: bool = False
    loss_config: dict[str, Any] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    dataset_stats: dict[str, Any] | None = None
    training_args: TrainingArguments | None = None
    eval_results: list[CardEvalResult] = field(default_factory=list)
    training_summary: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    language: str | list[str] | None = None
    license: str | None = None

    @classmethod
    def from_reranker(cls, reranker: AnswerTokenReranker, repo_id: str | None = None, **fields) -> RerankerCardData:
        """Card data from what a reranker knows by itself (settings, answer ids, base model, its training loss)."""
        model = reranker.model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base_model = getattr(base.config, "_name_or_path", None) or None
        return cls(
            settings=reranker.settings,
            answer_token_ids=reranker.answer_token_ids,
            model_kind=reranker.model_kind,
            repo_id=repo_id,
            base_model=base_model,
            adapter=base is not model,
            loss_config=dict(reranker.training_info),
            **fields,
        )


def reranker_model_card(data: RerankerCardData) -> ModelCard:
    """Render the reranker card: Hub metadata, prompt template, answer tokens, how to score, training and citation."""
    loss = data.loss_config.get("loss")
    name = data.model_name or (data.repo_id or "answer-token-reranker").rstrip("/").split("/")[-1]
    tags = [
        "hf_contrastive",
        "reranker",
        "text-ranking",
        NAME,
        *([f"reranker_{loss}"] if loss else []),
        f"arxiv:{PAPER}",
    ]
    card_data = ModelCardData(
        library_name="hf_contrastive",
        pipeline_tag="text-ranking",
        license=data.license,
        language=data.language,
        base_model=data.base_model if is_hub_id(data.base_model) else None,
        datasets=[d for d in data.datasets if is_hub_id(d)] or None,
        tags=list(dict.fromkeys([*tags, *data.tags])),
        model_name=name if data.eval_results else None,  # only the model-index uses it
        eval_results=[result.to_eval_result() for result in data.eval_results] or None,
    )
    sections = [f"---\n{card_data.to_yaml()}\n---", f"# {name}", _card_summary(data)]
    sections += ["## Model details", bullets(_card_details(data))]
    sections += ["## Prompt", _card_prompt(data)]
    sections += ["## Usage", _card_usage(data.repo_id or "path/to/this/reranker")]
    sections += ["## How to score", f"Rank by {SCORE_EXPLANATIONS[data.settings.score]}"]
    if data.eval_results:
        sections += ["## Evaluation", evaluation_table(data.eval_results)]
    training = _card_training(data)
    if training:
        sections += ["## Training details", *training]
    sections += ["## Framework versions", bullets(_framework_versions().items()), "## Citation"]
    sections += [f"```bibtex\n{citation}\n```" for citation in (CITATION, HF_CONTRASTIVE_CITATION)]
    return ModelCard("\n\n".join(sections) + "\n")


def _framework_versions() -> dict[str, str]:
    versions = framework_versions()
    try:
        versions["trl"] = version("trl")
    except PackageNotFoundError:
        pass
    return versions


def _card_summary(data: RerankerCardData) -> str:
    loss = data.loss_config.get("loss")
    text = "A pointwise reranker"
    if data.base_model:
        text += f" fine-tuned from {model_link(data.base_model)}"
    if loss:
        text += f" with the `{loss}` loss"
    return text + (
        f" of [arXiv:{PAPER}](https://arxiv.org/abs/{PAPER}) (SFT or contrastive learning for LLM reranking), with "
        f"the `hf_contrastive` library. It reads one (query, document) prompt and scores the pair by its "
        f"{data.settings.yes_token!r} / {data.settings.no_token!r} logits at the answer position."
    )


def _card_details(data: RerankerCardData) -> list[tuple[str, str]]:
    yes_id, no_id = data.answer_token_ids
    settings = data.settings
    adapter = ", PEFT adapter (see adapter_config.json)" if data.adapter else ""
    position = "the last prompt token" if data.model_kind == "causal" else "the mask token appended to the prompt"
    items = [("**Base model**", model_link(data.base_model))] if data.base_model else []
    items += [
        ("**Model kind**", f"{data.model_kind} LM{adapter}"),
        (
            "**Answer tokens**",
            f"yes = `{settings.yes_token!r}` (id {yes_id}), no = `{settings.no_token!r}` (id {no_id})",
        ),
        ("**Answer position**", position),
        ("**Inference score**", f"`{settings.score}`"),
        ("**Max length**", f"{settings.max_length} tokens (longer prompts lose the end of their document)"),
    ]
    if data.loss_config:
        items.append(("**Training loss**", f"`{json.dumps(data.loss_config)}`"))
    return items


def _card_prompt(data: RerankerCardData) -> str:
    suffix = " The mask token is appended to it and read as the answer." if data.model_kind == "masked" else ""
    return (
        "Each pair is rendered with this template (Python `str.format` fields), and the answer is read right after "
        f"it.{suffix}\n\n```text\n{data.settings.prompt_template}\n```\n\n"
        f"Default instruction: `{data.settings.instruction}`"
    )


def _card_usage(repo_id: str) -> str:
    return f"""```python
from hf_contrastive.models.reranker import AnswerTokenReranker

reranker = AnswerTokenReranker.from_pretrained({json.dumps(repo_id)})
query = "how do cats purr?"
documents = ["Cats purr by vibrating muscles in the larynx.", "The stock market closed higher today."]
scores = reranker.score([query] * len(documents), documents)  # higher = more relevant
print(sorted(zip(scores, documents), reverse=True))
```"""


def _card_training(data: RerankerCardData) -> list[str]:
    parts = []
    if data.datasets or data.dataset_stats:
        lines = [", ".join(dataset_link(d) for d in data.datasets)] if data.datasets else []
        if data.dataset_stats:
            lines.append(dataset_section(data.dataset_stats))
            negatives = data.dataset_stats.get("negatives_per_query")
            if negatives:
                lines.append(
                    f"Negatives per query: min {negatives['min']}, mean {negatives['mean']}, max {negatives['max']}."
                )
        parts += ["### Training data", "\n\n".join(lines)]
    if data.loss_config:
        parts += ["### Loss", f"```json\n{json.dumps(data.loss_config, indent=2)}\n```"]
    if data.training_args is not None:
        non_default, _ = split_non_default_args(data.training_args)
        changed = bullets((f"`{k}`", format_value(v)) for k, v in non_default.items())
        parts += ["### Hyperparameters (changed from the `TrainingArguments` defaults)", changed]
    if data.training_summary:
        parts += ["### Training log", bullets((k, format_value(v)) for k, v in data.training_summary.items())]
    return parts
