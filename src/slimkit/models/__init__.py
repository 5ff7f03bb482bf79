"""Model loading (SPECs), the built-in zoo and safetensors checkpoints."""
from .checkpoint import save_checkpoint
from .spec import load_model

__all__ = ["load_model", "save_checkpoint"]
