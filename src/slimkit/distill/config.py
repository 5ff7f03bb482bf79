"""The ``distill`` step config."""
from __future__ import annotations

import dataclasses
from typing import Literal

from ..recipe import check
from ..train import FineTune


@dataclasses.dataclass
class Distill(FineTune):
    """Train the model (or a smaller student built from it) to mimic one or more teachers.

    The training fields (``epochs``, ``lr``, ``optimizer``, ...) are :class:`slimkit.FineTune`'s.
    Classification: ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)``,
    with soft targets averaged over the teachers. Embedding (cosine) tasks: ``embedding_loss`` to the
    teachers' mean embedding. Feature distillation adds ``feature_weight * MSE`` between paired
    intermediate outputs of the student and the first teacher, through a learned 1x1 conv / linear
    adapter where their widths differ.

    Args:
        temperature: softmax temperature T (> 0) of the soft targets.
        alpha: weight of the soft-target loss, in [0, 1]; ``1 - alpha`` weighs the hard labels.
        teachers: model SPECs (``zoo:NAME``, checkpoint dir, ...) whose soft targets are averaged;
            empty = the step's teacher (the model before this step, or ``--teacher``).
        features: student module name -> teacher module name, for hint/feature distillation.
        feature_weight: weight of the feature loss.
        embedding_loss: ``cosine`` (1 - cosine) or ``mse`` for embedding tasks.
        student: ``same`` trains the model itself; ``narrow`` builds a ResNetSmall with every width
            times ``width``; ``shallow`` keeps every other transformer layer, copied from the teacher.
        width: width multiplier for ``student: narrow``, in (0, 1].
    """

    key = "distill"
    needs_data = True
    temperature: float = 4.0
    alpha: float = 0.9
    teachers: tuple[str, ...] = ()
    features: dict[str, str] = dataclasses.field(default_factory=dict)
    feature_weight: float = 1.0
    embedding_loss: Literal["cosine", "mse"] = "cosine"
    student: Literal["same", "narrow", "shallow"] = "same"
    width: float = 0.5

    def __post_init__(self):
        super().__post_init__()
        check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        check(0 <= self.alpha <= 1, "alpha", f"must be in [0, 1], got {self.alpha}")
        check(self.feature_weight >= 0, "feature_weight", f"must be >= 0, got {self.feature_weight}")
        check(0 < self.width <= 1, "width", f"must be in (0, 1], got {self.width}")
