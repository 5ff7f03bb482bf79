"""Knowledge distillation (soft targets, features, embeddings, several teachers) — the ``distill`` step."""
from .config import Distill
from .losses import embedding_loss, soft_target_loss
from .step import distill, distill_into
from .students import narrower, shallower

__all__ = ["Distill", "distill", "distill_into", "embedding_loss", "narrower", "shallower", "soft_target_loss"]
