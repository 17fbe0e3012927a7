"""Models, registered with the Auto classes on import so ``AutoModel.from_pretrained`` needs no remote code."""

from transformers import AutoConfig, AutoModel

from .autotcl import AutoTCLConfig, AutoTCLModel
from .clip_rocket import CLIPRocketConfig, CLIPRocketModel
from .close import CLOSECaptioner, CLOSECaptionerConfig, CLOSEClassifier, CLOSEClassifierConfig
from .cmim import CMIMConfig, CMIMModel
from .denseclip import DenseCLIPConfig, DenseCLIPSegmenter
from .encoder import ContrastiveEncoder, ContrastiveEncoderConfig, ContrastiveEncoderOutput, pool
from .graph_rec import DCCF, DCCFConfig, LightGCN, LightGCNConfig, XSimGCL, XSimGCLConfig
from .kcl import KCLConfig, KCLModel
from .mocoop import MoCoOpConfig, MoCoOpModel
from .multimodal_encoder import MultiModalEncoder, MultiModalEncoderConfig
from .packed import enable_unpadding
from .sepclr import SepCLRConfig, SepCLRModel
from .seq_rec import SASRec, SASRecConfig
from .ts_forecaster import TSForecaster, TSForecasterConfig
from .view_encoder import ViewEncoder, ViewEncoderConfig

# Every model family: AutoConfig / AutoModel resolve their model_type without trust_remote_code.
MODEL_CLASSES = (
    (ContrastiveEncoderConfig, ContrastiveEncoder),
    (CLIPRocketConfig, CLIPRocketModel),
    (CLOSEClassifierConfig, CLOSEClassifier),
    (CLOSECaptionerConfig, CLOSECaptioner),
    (DenseCLIPConfig, DenseCLIPSegmenter),
    (MoCoOpConfig, MoCoOpModel),
    (MultiModalEncoderConfig, MultiModalEncoder),
    (ViewEncoderConfig, ViewEncoder),
    (SepCLRConfig, SepCLRModel),
    (CMIMConfig, CMIMModel),
    (KCLConfig, KCLModel),
    (AutoTCLConfig, AutoTCLModel),
    (LightGCNConfig, LightGCN),
    (XSimGCLConfig, XSimGCL),
    (DCCFConfig, DCCF),
    (SASRecConfig, SASRec),
    (TSForecasterConfig, TSForecaster),
)
for _config_class, _model_class in MODEL_CLASSES:
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
    AutoModel.register(_config_class, _model_class, exist_ok=True)

__all__ = [
    "AutoTCLConfig",
    "AutoTCLModel",
    "CLIPRocketConfig",
    "CLIPRocketModel",
    "CLOSECaptioner",
    "CLOSECaptionerConfig",
    "CLOSEClassifier",
    "CLOSEClassifierConfig",
    "CMIMConfig",
    "CMIMModel",
    "ContrastiveEncoder",
    "ContrastiveEncoderConfig",
    "ContrastiveEncoderOutput",
    "DCCF",
    "DCCFConfig",
    "DenseCLIPConfig",
    "DenseCLIPSegmenter",
    "KCLConfig",
    "KCLModel",
    "LightGCN",
    "LightGCNConfig",
    "MoCoOpConfig",
    "MoCoOpModel",
    "MultiModalEncoder",
    "MultiModalEncoderConfig",
    "SASRec",
    "SASRecConfig",
    "SepCLRConfig",
    "SepCLRModel",
    "TSForecaster",
    "TSForecasterConfig",
    "ViewEncoder",
    "ViewEncoderConfig",
    "XSimGCL",
    "XSimGCLConfig",
    "enable_unpadding",
    "pool",
]
