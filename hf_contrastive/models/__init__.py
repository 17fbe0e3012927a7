"""Models, registered with the Auto classes on import so ``AutoModel.from_pretrained`` needs no remote code."""

from transformers import AutoConfig, AutoModel

from .clip_rocket import CLIPRocketConfig, CLIPRocketModel
from .encoder import ContrastiveEncoder, ContrastiveEncoderConfig, ContrastiveEncoderOutput, pool
from .packed import enable_unpadding

AutoConfig.register(ContrastiveEncoderConfig.model_type, ContrastiveEncoderConfig, exist_ok=True)
AutoModel.register(ContrastiveEncoderConfig, ContrastiveEncoder, exist_ok=True)
AutoConfig.register(CLIPRocketConfig.model_type, CLIPRocketConfig, exist_ok=True)
AutoModel.register(CLIPRocketConfig, CLIPRocketModel, exist_ok=True)

__all__ = [
    "CLIPRocketConfig",
    "CLIPRocketModel",
    "ContrastiveEncoder",
    "ContrastiveEncoderConfig",
    "ContrastiveEncoderOutput",
    "enable_unpadding",
    "pool",
]
