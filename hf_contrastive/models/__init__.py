"""Models, registered with the Auto classes on import so ``AutoModel.from_pretrained`` needs no remote code."""

from transformers import AutoConfig, AutoModel

from .clip_rocket import CLIPRocketConfig, CLIPRocketModel
from .close import CLOSECaptioner, CLOSECaptionerConfig, CLOSEClassifier, CLOSEClassifierConfig
from .encoder import ContrastiveEncoder, ContrastiveEncoderConfig, ContrastiveEncoderOutput, pool
from .mocoop import MoCoOpConfig, MoCoOpModel
from .packed import enable_unpadding

AutoConfig.register(ContrastiveEncoderConfig.model_type, ContrastiveEncoderConfig, exist_ok=True)
AutoModel.register(ContrastiveEncoderConfig, ContrastiveEncoder, exist_ok=True)
AutoConfig.register(CLIPRocketConfig.model_type, CLIPRocketConfig, exist_ok=True)
AutoModel.register(CLIPRocketConfig, CLIPRocketModel, exist_ok=True)
AutoConfig.register(CLOSEClassifierConfig.model_type, CLOSEClassifierConfig, exist_ok=True)
AutoModel.register(CLOSEClassifierConfig, CLOSEClassifier, exist_ok=True)
AutoConfig.register(CLOSECaptionerConfig.model_type, CLOSECaptionerConfig, exist_ok=True)
AutoModel.register(CLOSECaptionerConfig, CLOSECaptioner, exist_ok=True)
AutoConfig.register(MoCoOpConfig.model_type, MoCoOpConfig, exist_ok=True)
AutoModel.register(MoCoOpConfig, MoCoOpModel, exist_ok=True)

__all__ = [
    "CLIPRocketConfig",
    "CLIPRocketModel",
    "CLOSECaptioner",
    "CLOSECaptionerConfig",
    "CLOSEClassifier",
    "CLOSEClassifierConfig",
    "ContrastiveEncoder",
    "ContrastiveEncoderConfig",
    "ContrastiveEncoderOutput",
    "MoCoOpConfig",
    "MoCoOpModel",
    "enable_unpadding",
    "pool",
]
