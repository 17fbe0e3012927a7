"""Models, registered with the Auto classes on import so ``AutoModel.from_pretrained`` needs no remote code."""

from transformers import AutoConfig, AutoModel

from .encoder import ContrastiveEncoder, ContrastiveEncoderConfig, ContrastiveEncoderOutput, pool
from .packed import enable_unpadding

AutoConfig.register(ContrastiveEncoderConfig.model_type, ContrastiveEncoderConfig, exist_ok=True)
AutoModel.register(ContrastiveEncoderConfig, ContrastiveEncoder, exist_ok=True)

__all__ = ["ContrastiveEncoder", "ContrastiveEncoderConfig", "ContrastiveEncoderOutput", "enable_unpadding", "pool"]
