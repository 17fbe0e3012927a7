"""A tiny InstructPix2Pix pipeline assembled from configs (no download) and editing rows for the diffusion tests.

32 x 32 images -> 4 x 4 latents (the VAE downsamples by 8), a 2-block UNet with 8 input channels, a 2-layer CLIP
text encoder with a character-level CLIP tokenizer (32 tokens), and a DDPM scheduler: a training step takes
milliseconds on the CPU, and the folder saves and loads through ``StableDiffusionInstructPix2PixPipeline``.
"""

from __future__ import annotations

import string

import numpy as np
import torch
from datasets import Dataset
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

RESOLUTION = 32
TEXT_DIM = 32
PROMPTS = ["make the red circle blue", "move the square to the left", "add a green triangle", "remove the star"]
NEGATIVES = [
    ["make the blue circle red"],
    ["move the square to the right"],
    ["add two green triangles"],
    ["remove the moon", "add a star"],
]


def tiny_clip_tokenizer(model_max_length: int = 32) -> CLIPTokenizer:
    """A CLIP BPE tokenizer over lower-case letters (no merges): every word is spelt letter by letter."""
    letters = list(string.ascii_lowercase)
    tokens = [*letters, *(f"{letter}</w>" for letter in letters), "<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(
        vocab={token: i for i, token in enumerate(tokens)}, merges=[], model_max_length=model_max_length
    )


def tiny_pipeline(prediction_type: str = "epsilon", seed: int = 0) -> StableDiffusionInstructPix2PixPipeline:
    """Random-init UNet (8 input channels), VAE, CLIP text encoder + tokenizer and DDPM scheduler, seeded."""
    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_DIM,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=RESOLUTION // 8,
        in_channels=8,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=RESOLUTION,
    )
    return StableDiffusionInstructPix2PixPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDPMScheduler(prediction_type=prediction_type),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def random_image(seed: int, size: int = RESOLUTION, mode: str = "RGB") -> Image.Image:
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, channels), dtype=np.uint8)
    return Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=mode)


def editing_rows(count: int = 4, size: int = RESOLUTION) -> Dataset:
    """``count`` editing rows of random RGB images with the column contract of ``hf_contrastive.data.editing``."""
    return Dataset.from_dict(
        {
            "input_image": [random_image(2 * i, size) for i in range(count)],
            "edited_image": [random_image(2 * i + 1, size) for i in range(count)],
            "edit_prompt": [PROMPTS[i % len(PROMPTS)] for i in range(count)],
            "negative_prompts": [NEGATIVES[i % len(NEGATIVES)] for i in range(count)],
        }
    )
