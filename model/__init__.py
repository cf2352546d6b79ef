"""LXMERT in plain PyTorch: configuration, encoder, pre-training and task models."""

from .config import OBJECTIVES, PRESETS, LxmertConfig
from .encoder import EncoderOutput, LxmertModel
from .pretraining import IGNORE_INDEX, LxmertForPretraining, LxmertPretrainingOutput
from .tasks import LxmertForNLVR2, LxmertForQuestionAnswering, TaskOutput

__all__ = [
    "OBJECTIVES", "PRESETS", "LxmertConfig", "EncoderOutput", "LxmertModel", "IGNORE_INDEX",
    "LxmertForPretraining", "LxmertPretrainingOutput", "LxmertForNLVR2", "LxmertForQuestionAnswering", "TaskOutput",
]
