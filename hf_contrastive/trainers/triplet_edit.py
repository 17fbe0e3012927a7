"""TripletEditTrainer: fine-tune the UNet of an InstructPix2Pix pipeline with SuperEdit's triplet loss.

    pipeline = StableDiffusionInstructPix2PixPipeline.from_pretrained("timbrooks/instruct-pix2pix")
    rows = load_editing_dataset("limingcv/SuperEdit-40K", column_mapping=SUPEREDIT_COLUMNS)
    args = TripletEditConfig(output_dir="outputs/superedit", max_steps=6001, per_device_train_batch_size=64,
                             bf16=True, activation_checkpointing=True)
    trainer = TripletEditTrainer(pipeline, args, train_dataset=rows, validation_rows=rows.select(range(4)))
    trainer.train()
    trainer.save_model()  # a folder that StableDiffusionInstructPix2PixPipeline.from_pretrained loads

    accelerate launch --multi_gpu --num_processes 8 my_script.py   # DDP over the UNet, nothing else to change

Rows follow :mod:`hf_contrastive.data.editing` (``input_image``, ``edited_image``, ``edit_prompt``,
``negative_prompts``); the datasets are checked before the first step. A step is the diffusers InstructPix2Pix
example's (``examples/instruct_pix2pix/train_instruct_pix2pix.py``) with SuperEdit's extra term
(:mod:`hf_contrastive.objectives.superedit`):

1. ``z0 = vae.encode(edited).latent_dist.sample() * scaling_factor``, ``c_img = vae.encode(original).mode()`` (no
   scaling), ``t ~ U{0..T-1}``, ``z_t = scheduler.add_noise(z0, eps, t)``; positive and negative instructions are
   encoded in one call of the text encoder. VAE and text encoder are frozen and run in the weight dtype (bf16 /
   fp16 when training in mixed precision); latents, noise and targets are fp32.
2. Conditioning dropout, one draw ``r ~ U(0, 1)`` per sample, the same for both branches: ``r < p`` text dropped,
   ``p <= r < 2p`` both, ``2p <= r < 3p`` image dropped (null text = the encoder output of ``""``; image latent * 0).
3. One UNet call on ``[concat(z_t, c_img); concat(z_t, c_img)]`` with ``[h_pos; h_neg]`` [2B, ...], split in two;
   before ``triplet_loss_start_step`` (the term's weight is 0) only the positive half runs: the step is then exactly
   InstructPix2Pix, at its cost.
4. ``L = MSE(eps_pos, y) + lambda(step) * L_trip``; ``y`` = noise (epsilon) or the velocity (v-prediction).

The step gating the term is the *global* optimizer step; ``start_step_counter="epoch_local"`` replays the released
script, whose per-epoch counter never reaches 2000 on SuperEdit-40K (the term never switches on).

Around the step, what a diffusers user expects of the example script: an EMA of the UNet (diffusers' ``EMAModel``,
stepped once per optimizer step), gradient checkpointing (``activation_checkpointing=True``), bf16, 8-bit Adam
(``optim="adamw_bnb_8bit"``, refused at once without ``bitsandbytes``), validation edits saved every
``validation_steps`` under ``output_dir/validation/step-N/``, DDP through ``accelerate``, resume from checkpoints
(raw UNet in ``unet/``, EMA in ``unet_ema/`` as in the diffusers example). ``save_model`` writes a pipeline folder with
the EMA weights in ``unet/`` (the raw ones without EMA) and the frozen modules at their original precision.

Why diffusers' ``EMAModel`` rather than :mod:`hf_contrastive.trainers.ema`: the EMA here is an inference copy that
never enters the forward, so it must not live inside the trained module (DDP would carry it); ``EMAModel`` keeps it
outside, has the decay warm-up ``min(decay, (1 + n) / (10 + n))`` of the diffusers example, swaps weights in and out
for validation (``store`` / ``copy_to`` / ``restore``) and saves in the ``unet_ema`` layout diffusers users know.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionInstructPix2PixPipeline
from diffusers.training_utils import EMAModel
from PIL import Image
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.utils import is_bitsandbytes_available

from ..data.editing import EDIT_PROMPT, INPUT_IMAGE, checked_editing_row, checked_image, validate_editing_dataset
from ..hub import ContrastiveCardData, build_model_card, dataset_statistics
from ..objectives.superedit import (
    MASK_MODES,
    PREDICTION_TYPES,
    SuperEditTripletLoss,
    conditioning_dropout,
    denoising_target,
    triplet_mask,
)
from .common import GuardedTrainingArguments, TrainerBookkeeping, card_repo_id

START_STEP_COUNTERS = ("global", "epoch_local")
EMA_FOLDER = "unet_ema"


@dataclass
class TripletEditConfig(GuardedTrainingArguments):
    """``TrainingArguments`` with SuperEdit's defaults (``superedit/instruct_pix2pix/train_sd15.sh``)."""

    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate of the UNet (paper: 1e-4)."})
    weight_decay: float = field(default=1e-2, metadata={"help": "AdamW weight decay (paper: 1e-2)."})
    lr_scheduler_type: str = field(default="constant", metadata={"help": "Constant learning rate (paper)."})
    resolution: int = field(default=512, metadata={"help": "Images are resized to resolution x resolution."})
    random_flip: bool = field(default=False, metadata={"help": "Flip each pair horizontally (both images) at p=0.5."})
    conditioning_dropout_prob: float = field(
        default=0.05, metadata={"help": "p of InstructPix2Pix's text / image / both dropout, for CFG (paper: 0.05)."}
    )
    triplet_loss_weight: float = field(default=1.0, metadata={"help": "lambda of the triplet term (paper: 1.0)."})
    triplet_loss_margin: float = field(default=5e-4, metadata={"help": "Margin on per-sample mean distances."})
    triplet_loss_start_step: int = field(default=2000, metadata={"help": "First step with the triplet term on."})
    triplet_loss_threshold: float = field(default=0.0, metadata={"help": "Zero out triplet terms below it (0: off)."})
    stop_pos_grad: bool = field(default=False, metadata={"help": "Detach eps_pos inside the triplet term."})
    triplet_mask_mode: str = field(
        default="official",
        metadata={"help": "'official': drop text-dropped/image-kept samples; 'both_available': keep both-kept only."},
    )
    start_step_counter: str = field(
        default="global",
        metadata={"help": "'global' optimizer steps, or 'epoch_local' (the released script's per-epoch counter)."},
    )
    prediction_type: str | None = field(
        default=None, metadata={"help": "'epsilon' or 'v_prediction'; None: the scheduler's own."}
    )
    use_ema: bool = field(default=True, metadata={"help": "Keep an EMA of the UNet and save it (paper: on)."})
    ema_decay: float = field(default=0.9999, metadata={"help": "EMA decay, reached after the warm-up."})
    validation_steps: int = field(default=0, metadata={"help": "Save validation edits every N steps (0: never)."})
    validation_inference_steps: int = field(default=20, metadata={"help": "Denoising steps of validation edits."})
    validation_guidance_scale: float = field(default=7.5, metadata={"help": "Text guidance of validation edits."})
    validation_image_guidance_scale: float = field(default=1.5, metadata={"help": "Image guidance of them."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the collator reads the editing columns."}
    )

    def __post_init__(self):
        super().__post_init__()
        choices = {
            "triplet_mask_mode": MASK_MODES,
            "start_step_counter": START_STEP_COUNTERS,
            "prediction_type": (None, *PREDICTION_TYPES),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}.")
        if not 0 <= self.conditioning_dropout_prob <= 1 / 3:
            raise ValueError(
                f"conditioning_dropout_prob must be in [0, 1/3] (3p of the samples lose a condition), got "
                f"{self.conditioning_dropout_prob}."
            )
        if self.resolution % 8:
            raise ValueError(f"resolution must be a multiple of 8 (the VAE downsamples by 8), got {self.resolution}.")
        optimizer = getattr(self.optim, "value", self.optim)  # an OptimizerNames member after super().__post_init__
        if ("bnb" in optimizer or "8bit" in optimizer) and not is_bitsandbytes_available():
            raise ValueError(
                f"optim={self.optim!r} needs bitsandbytes: `pip install bitsandbytes`, or use 'adamw_torch'."
            )


class TripletEditCollator:
    """Rows -> ``original_pixel_values``, ``edited_pixel_values`` [B, 3, R, R] in [-1, 1], ``input_ids`` and
    ``neg_input_ids`` [B, L] (padded to the tokenizer's ``model_max_length``, 77 for CLIP).

    Every row is checked (:func:`~hf_contrastive.data.editing.checked_editing_row`; ``row`` in an error is the
    position in the batch) and both images are resized to ``resolution`` x ``resolution`` as in the diffusers example
    (its crop is then a no-op) and flipped together. One negative instruction is drawn per row with ``random.choice``
    at every call, so each epoch sees new pairings (the Trainer seeds ``random`` and saves its state in checkpoints).
    """

    def __init__(self, tokenizer, resolution: int, random_flip: bool = False) -> None:
        self.tokenizer = tokenizer
        self.resolution = resolution
        self.random_flip = random_flip

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        checked = [checked_editing_row(row, index, self.resolution) for index, row in enumerate(rows)]
        pairs = torch.stack([self._pixel_pair(row.input_image, row.edited_image) for row in checked])
        return {
            "original_pixel_values": pairs[:, 0],
            "edited_pixel_values": pairs[:, 1],
            "input_ids": self.tokenize([row.edit_prompt for row in checked]),
            "neg_input_ids": self.tokenize([random.choice(row.negative_prompts) for row in checked]),
        }

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        max_length = self.tokenizer.model_max_length
        return self.tokenizer(
            texts, max_length=max_length, padding="max_length", truncation=True, return_tensors="pt"
        ).input_ids

    def _pixel_pair(self, original: Image.Image, edited: Image.Image) -> torch.Tensor:
        """[2, 3, R, R] in [-1, 1]: the two images resized, flipped together (one draw) when ``random_flip``."""
        size = (self.resolution, self.resolution)
        pair = np.stack([np.asarray(image.resize(size, Image.BICUBIC)) for image in (original, edited)])
        pixels = torch.from_numpy(pair).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        if self.random_flip and random.random() < 0.5:
            pixels = pixels.flip(-1)
        return pixels


def frozen_copy(module: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """``module`` frozen, in eval mode, on ``device`` in ``dtype``; a copy when the dtype changes.

    The copy leaves the pipeline's own module at its precision, so that ``save_model`` never writes bf16-rounded
    VAE or text-encoder weights.
    """
    if module.dtype != dtype:
        module = copy.deepcopy(module).to(dtype)
    return module.requires_grad_(False).eval().to(device)


class TripletEditTrainer(TrainerBookkeeping, Trainer):
    """``transformers.Trainer`` that trains the UNet of a ``StableDiffusionInstructPix2PixPipeline`` (SuperEdit).

    Args:
        pipeline: the pipeline to fine-tune (or its Hub id / folder); its UNet must take 8 input channels.
        args: a :class:`TripletEditConfig`.
        train_dataset, eval_dataset: editing rows (see :mod:`hf_contrastive.data.editing`), checked at once;
            evaluation reports the loss at the current step.
        validation_rows: a few rows with ``input_image`` and ``edit_prompt``, edited every ``validation_steps``
            (with the EMA weights) and shown in the model card.
    """

    _tag_names = ["hf_contrastive", "superedit", "instruct-pix2pix", "diffusers", "image-editing"]

    def __init__(
        self,
        pipeline: StableDiffusionInstructPix2PixPipeline | str,
        args: TripletEditConfig,
        train_dataset=None,
        eval_dataset=None,
        data_collator=None,
        validation_rows: Sequence[dict[str, Any]] | None = None,
        **trainer_kwargs,
    ):
        if isinstance(pipeline, str):
            pipeline = StableDiffusionInstructPix2PixPipeline.from_pretrained(pipeline)
        _check_setup(pipeline, args)
        for dataset in (train_dataset, eval_dataset):
            if dataset is not None:
                validate_editing_dataset(dataset, args.resolution)
        self.validation_rows = _checked_validation_rows(validation_rows or [], args.resolution)
        self.pipeline = pipeline
        self.noise_scheduler = pipeline.scheduler
        self.prediction_type = args.prediction_type or pipeline.scheduler.config.prediction_type
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"The scheduler predicts {self.prediction_type!r}; supported: {PREDICTION_TYPES}.")
        self.weight_dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else torch.float32
        self.vae = frozen_copy(pipeline.vae, args.device, self.weight_dtype)
        self.text_encoder = frozen_copy(pipeline.text_encoder, args.device, self.weight_dtype)
        self.objective = SuperEditTripletLoss(
            margin=args.triplet_loss_margin,
            weight=args.triplet_loss_weight,
            start_step=args.triplet_loss_start_step,
            threshold=args.triplet_loss_threshold,
            stop_pos_grad=args.stop_pos_grad,
        )
        if data_collator is None:
            data_collator = TripletEditCollator(pipeline.tokenizer, args.resolution, args.random_flip)
        unet = pipeline.unet.train()
        if args.activation_checkpointing:
            unet.enable_gradient_checkpointing()
        super().__init__(
            model=unet,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            data_collator=data_collator,
            **trainer_kwargs,
        )
        self._init_bookkeeping()
        self._null_text: torch.Tensor | None = None
        self._epoch_start_step = 0
        self._writing_checkpoint = False
        self.validation_images: dict[int, list[str]] = {}
        self.ema = (
            EMAModel(
                unet.parameters(), decay=args.ema_decay, foreach=True, model_cls=type(unet), model_config=unet.config
            )
            if args.use_ema
            else None
        )
        self.add_callback(TripletEditSteps(self))

    def train(self, *args, **kwargs):
        """``Trainer.train``; gradient checkpointing was switched on the diffusers way in ``__init__``."""
        with _trainer_checkpointing_off(self.args):
            return super().train(*args, **kwargs)

    # ----------------------------------------------------------------------------------------------- loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        latents, image_latents, text_positive, text_negative = self._encode(inputs)
        batch_size = latents.shape[0]
        noise = torch.randn_like(latents)
        timesteps = torch.randint(
            0, self.noise_scheduler.config.num_train_timesteps, (batch_size,), device=latents.device
        ).long()
        noisy_latents = self.noise_scheduler.add_noise(latents, noise, timesteps)
        dropout = conditioning_dropout(
            torch.rand(batch_size, device=latents.device), self.args.conditioning_dropout_prob
        )
        null_text = self._null_text_embedding()
        text_dropped = dropout.text_dropped[:, None, None]
        text_positive = torch.where(text_dropped, null_text, text_positive)
        if text_negative is not None:
            text_negative = torch.where(text_dropped, null_text, text_negative)
        image_latents = image_latents * (~dropout.image_dropped).to(image_latents.dtype)[:, None, None, None]
        step = self.triplet_step()
        if self.objective.weight_at(step) == 0:
            text_negative = None  # the term is off: skip the negative half of the UNet call
        predictions = self.predict_noise(
            model, torch.cat([noisy_latents, image_latents], dim=1), timesteps, text_positive, text_negative
        )
        target = denoising_target(self.noise_scheduler, latents, noise, timesteps, self.prediction_type)
        batch = {"target": target, "triplet_mask": triplet_mask(dropout, self.args.triplet_mask_mode), "step": step}
        output = self.objective(predictions, batch)
        if model.training:
            self._accumulate_logs(output.logs)
            self._check_finite(output.loss)
        return (output.loss, predictions) if return_outputs else output.loss

    @staticmethod
    def predict_noise(
        model: nn.Module,
        unet_input: torch.Tensor,
        timesteps: torch.Tensor,
        text_positive: torch.Tensor,
        text_negative: torch.Tensor | None,
    ) -> dict[str, torch.Tensor | None]:
        """``{"positive": [B, 4, h, w], "negative": [B, 4, h, w] or None}`` from ONE UNet call on the doubled batch.

        ``unet_input`` [B, 8, h, w] (noisy latent + image latent) and ``timesteps`` [B] are repeated; the text states
        [B, L, D] of the two instructions are stacked, so both halves see the same latent, timestep and image.
        """
        if text_negative is None:
            return {"positive": model(unet_input, timesteps, text_positive, return_dict=False)[0], "negative": None}
        prediction = model(
            unet_input.repeat(2, 1, 1, 1),
            timesteps.repeat(2),
            torch.cat([text_positive, text_negative]),
            return_dict=False,
        )[0]
        positive, negative = prediction.chunk(2)
        return {"positive": positive, "negative": negative}

    @torch.no_grad()
    def _encode(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Target latent ``z0`` (sampled, scaled), image latent (mode, unscaled), positive / negative text states."""
        vae = self.vae
        edited = inputs["edited_pixel_values"].to(self.weight_dtype)
        latents = vae.encode(edited).latent_dist.sample() * vae.config.scaling_factor
        image_latents = vae.encode(inputs["original_pixel_values"].to(self.weight_dtype)).latent_dist.mode()
        negative_ids = inputs.get("neg_input_ids")
        ids = inputs["input_ids"] if negative_ids is None else torch.cat([inputs["input_ids"], negative_ids])
        text = self.text_encoder(ids)[0]
        text_positive, text_negative = (text, None) if negative_ids is None else text.chunk(2)
        return latents.float(), image_latents.float(), text_positive, text_negative

    @torch.no_grad()
    def _null_text_embedding(self) -> torch.Tensor:
        """[1, L, D]: the text encoder's output for ``""`` (the unconditional text of classifier-free guidance)."""
        if self._null_text is None:
            ids = self.data_collator.tokenize([""]).to(self.text_encoder.device)
            self._null_text = self.text_encoder(ids)[0]
        return self._null_text

    def triplet_step(self) -> int:
        """The step that gates the triplet term: the global optimizer step, or the step within the epoch."""
        if self.args.start_step_counter == "epoch_local":
            return self.state.global_step - self._epoch_start_step
        return self.state.global_step

    # ----------------------------------------------------------------------------------------------- validation
    @torch.no_grad()
    def log_validation(self) -> list[str]:
        """Edit ``validation_rows`` with the EMA weights (the raw ones without EMA); save and return the PNG paths."""
        step = self.state.global_step
        folder = os.path.join(self.args.output_dir, "validation", f"step-{step}")
        os.makedirs(folder, exist_ok=True)
        unet = self.accelerator.unwrap_model(self.model)
        pipeline = self._pipeline_with(unet, self.vae, self.text_encoder)
        pipeline.set_progress_bar_config(disable=True)
        generator = torch.Generator(unet.device).manual_seed(self.args.seed)
        paths = []
        with self._ema_weights(unet), self._eval_mode(unet), self._autocast():
            for index, row in enumerate(self.validation_rows):
                edited = pipeline(
                    row[EDIT_PROMPT],
                    image=row[INPUT_IMAGE],
                    num_inference_steps=self.args.validation_inference_steps,
                    guidance_scale=self.args.validation_guidance_scale,
                    image_guidance_scale=self.args.validation_image_guidance_scale,
                    generator=generator,
                ).images[0]
                paths.append(os.path.join(folder, f"{index}.png"))
                edited.save(paths[-1])
        self.validation_images[step] = paths
        return paths

    @contextlib.contextmanager
    def _ema_weights(self, unet: nn.Module) -> Iterator[None]:
        if self.ema is None:
            yield
            return
        self.ema.store(unet.parameters())
        self.ema.copy_to(unet.parameters())
        try:
            yield
        finally:
            self.ema.restore(unet.parameters())

    @staticmethod
    @contextlib.contextmanager
    def _eval_mode(module: nn.Module) -> Iterator[None]:
        module.eval()
        try:
            yield
        finally:
            module.train()

    def _autocast(self):
        device_type = self.args.device.type
        return torch.autocast(device_type, dtype=self.weight_dtype, enabled=self.weight_dtype != torch.float32)

    def _pipeline_with(self, unet: nn.Module, vae: nn.Module, text_encoder: nn.Module):
        components = {**self.pipeline.components, "unet": unet, "vae": vae, "text_encoder": text_encoder}
        return StableDiffusionInstructPix2PixPipeline(
            **components, requires_safety_checker=self.pipeline.config.requires_safety_checker
        )

    # ----------------------------------------------------------------------------------------------- saving
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Write a ``StableDiffusionInstructPix2PixPipeline`` folder (EMA weights in ``unet/``; raw + ``unet_ema/``
        in checkpoints), then push when ``push_to_hub`` and called by the user."""
        output_dir = output_dir or self.args.output_dir
        if self.args.should_save:
            unet = self.accelerator.unwrap_model(self.model)
            pipeline = self._pipeline_with(unet, self.pipeline.vae, self.pipeline.text_encoder)
            with contextlib.nullcontext() if self._writing_checkpoint else self._ema_weights(unet):
                pipeline.save_pretrained(output_dir)
            if self._writing_checkpoint and self.ema is not None:
                self.ema.save_pretrained(os.path.join(output_dir, EMA_FOLDER))
            torch.save(self.args, os.path.join(output_dir, "training_args.bin"))
        if self.args.push_to_hub and not _internal_call:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    def _save_checkpoint(self, model, trial):
        self._writing_checkpoint = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._writing_checkpoint = False

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Resume: the raw UNet from ``unet/`` and the EMA (with its step count) from ``unet_ema/``."""
        unet = self.accelerator.unwrap_model(model or self.model)
        saved = type(unet).from_pretrained(resume_from_checkpoint, subfolder="unet")
        unet.load_state_dict(saved.state_dict())
        if self.ema is not None:
            ema_folder = os.path.join(resume_from_checkpoint, EMA_FOLDER)
            if not os.path.isdir(ema_folder):
                raise ValueError(
                    f"{resume_from_checkpoint} has no {EMA_FOLDER}/ to resume the EMA from (use_ema=True)."
                )
            self.ema.load_state_dict(EMAModel.from_pretrained(ema_folder, model_cls=type(unet)).state_dict())
            self.ema.to(unet.device)

    # ----------------------------------------------------------------------------------------------- card
    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | list[str] | None = None,
        tags: list[str] | None = None,
        language: str | None = None,
        license: str | None = None,
        finetuned_from: str | None = None,
        **kwargs,
    ) -> None:
        """Write ``README.md``: base model, instruction data, triplet settings, sample edits, usage with diffusers."""
        if not self.is_world_process_zero():
            return
        repo_id = card_repo_id(self.args, model_name)
        base_model = finetuned_from or self.pipeline.name_or_path or None
        datasets = [dataset_name] if isinstance(dataset_name, str) else list(dataset_name or [])
        card = build_model_card(
            ContrastiveCardData(
                objective=self.objective.name,
                repo_id=repo_id,
                model_name=model_name,
                base_model=base_model,
                paper=self.objective.paper,
                objective_config=self.objective.get_config_dict(),
                datasets=datasets,
                language=language,
                license=license,
                pipeline_tag="image-to-image",
                summary=self._card_summary(base_model, datasets),
                usage=_usage_snippet(repo_id, self.args.resolution),
                tags=[*self._tag_names, *(tags or [])],
                model_details=self._model_details(),
                dataset_stats=dataset_statistics(self.train_dataset, [EDIT_PROMPT]) if self.train_dataset else None,
                contrastive_facts=self.triplet_facts(),
                training_args=self.args,
                training_summary=self._training_summary(),
                citations=[self.objective.citation],
            )
        )
        card.save(os.path.join(self.args.output_dir, "README.md"))

    def triplet_facts(self) -> dict[str, Any]:
        """What the card's setup table shows: batch sizes and the triplet term's settings."""
        args = self.args
        return {
            "world_size": args.world_size,
            "per_device_batch": args.per_device_train_batch_size,
            "global_batch": args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps,
            "Negative instructions per sample": "1 per step, drawn uniformly from the row's negative_prompts",
            "Triplet margin / weight": f"{args.triplet_loss_margin} / {args.triplet_loss_weight}",
            "Triplet term starts at step": f"{args.triplet_loss_start_step} ({args.start_step_counter} counter)",
            "Triplet mask": args.triplet_mask_mode,
            "Conditioning dropout p": args.conditioning_dropout_prob,
            "Prediction type": self.prediction_type,
            "EMA decay": args.ema_decay if args.use_ema else "off",
            "Frozen VAE / text encoder dtype": str(self.weight_dtype).removeprefix("torch."),
        }

    def _model_details(self) -> dict[str, Any]:
        unet = self.accelerator.unwrap_model(self.model)
        return {
            "architecture": "StableDiffusionInstructPix2PixPipeline",
            "unet_parameters": sum(p.numel() for p in unet.parameters()),
            "resolution": self.args.resolution,
            "trained": "UNet only (VAE and text encoder frozen)",
        }

    def _card_summary(self, base_model: str | None, datasets: list[str]) -> str:
        text = (
            "An instruction-based image editor: the UNet of an InstructPix2Pix pipeline fine-tuned with SuperEdit's "
            "triplet loss ([arXiv:2505.02370](https://arxiv.org/abs/2505.02370)): the denoising MSE under the "
            "instruction plus a margin between the noise predicted under it and under a wrong instruction"
        )
        if base_model:
            text += f", from `{base_model}`"
        if datasets:
            text += f", on {', '.join(f'`{name}`' for name in datasets)}"
        text += ", with `hf_contrastive`."
        return text + self._sample_edits_section()

    def _sample_edits_section(self) -> str:
        """Markdown of the last validation edits, copied into ``output_dir/samples`` so the card can link them."""
        if not self.validation_images:
            return ""
        step = max(self.validation_images)
        folder = os.path.join(self.args.output_dir, "samples")
        os.makedirs(folder, exist_ok=True)
        lines = ["", "", f"Sample edits (step {step}, {self.args.validation_inference_steps} denoising steps):", ""]
        lines += ["| input | instruction | edit |", "| --- | --- | --- |"]
        for index, (row, path) in enumerate(zip(self.validation_rows, self.validation_images[step])):
            row[INPUT_IMAGE].save(os.path.join(folder, f"{index}_input.png"))
            Image.open(path).save(os.path.join(folder, f"{index}_edit.png"))
            instruction = row[EDIT_PROMPT].replace("|", "\\|")
            lines.append(f"| ![](samples/{index}_input.png) | {instruction} | ![](samples/{index}_edit.png) |")
        return "\n".join(lines)


class TripletEditSteps(TrainerCallback):
    """Once per optimizer step: the EMA update and, every ``validation_steps``, validation edits (main process)."""

    def __init__(self, trainer: TripletEditTrainer) -> None:
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.trainer._epoch_start_step = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        trainer = self.trainer
        if trainer.ema is not None:
            trainer.ema.step(trainer.accelerator.unwrap_model(trainer.model).parameters())
        due = args.validation_steps and state.global_step % args.validation_steps == 0
        if due and trainer.validation_rows and trainer.is_world_process_zero():
            trainer.log_validation()


def _check_setup(pipeline, args: TripletEditConfig) -> None:
    """Refuse, before anything runs, a UNet without the 8 InstructPix2Pix input channels or a sharded setup."""
    in_channels = pipeline.unet.config.in_channels
    if in_channels != 8:
        raise ValueError(
            f"The pipeline's UNet takes {in_channels} input channels; InstructPix2Pix needs 8 (4 noisy latent + 4 "
            "image latent): start from an InstructPix2Pix checkpoint (e.g. timbrooks/instruct-pix2pix)."
        )
    if args.fsdp or args.deepspeed:
        raise ValueError("TripletEditTrainer supports DDP (accelerate multi-GPU), not FSDP or DeepSpeed.")


def _checked_validation_rows(rows: Sequence[dict[str, Any]], resolution: int) -> list[dict[str, Any]]:
    """Validation rows with their input image opened, checked and resized to ``resolution``, and a non-blank prompt."""
    checked = []
    for index, row in enumerate(rows):
        image = checked_image(row.get(INPUT_IMAGE), INPUT_IMAGE, index, resolution).resize((resolution, resolution))
        prompt = row.get(EDIT_PROMPT)
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(
                f"Validation row {index}: {EDIT_PROMPT!r} must be a non-blank instruction, got {prompt!r}."
            )
        checked.append({INPUT_IMAGE: image, EDIT_PROMPT: prompt})
    return checked


@contextlib.contextmanager
def _trainer_checkpointing_off(args: TrainingArguments) -> Iterator[None]:
    """Hide ``activation_checkpointing`` from ``Trainer.train``: it would call a transformers-only method on the UNet."""
    enabled = args.activation_checkpointing
    args.activation_checkpointing = False
    try:
        yield
    finally:
        args.activation_checkpointing = enabled


def _usage_snippet(repo_id: str, resolution: int) -> str:
    return f"""```python
import torch
from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline
from PIL import Image

pipeline = StableDiffusionInstructPix2PixPipeline.from_pretrained("{repo_id}")
pipeline.scheduler = EulerAncestralDiscreteScheduler.from_config(pipeline.scheduler.config)
image = Image.open("input.png").convert("RGB").resize(({resolution}, {resolution}))
edited = pipeline(
    "make the red circle blue", image=image, num_inference_steps=30, guidance_scale=7.5,
    image_guidance_scale=1.5, generator=torch.Generator().manual_seed(42),
).images[0]  # the paper's inference settings
edited.save("edited.png")
```"""
