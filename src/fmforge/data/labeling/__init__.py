"""Weak supervision: label models over label matrices (rows x labeling functions)."""

from fmforge.data.labeling.functions import LabelingFunction, labeling_function
from fmforge.data.labeling.model import ABSTAIN, MODELS, LabelModel
from fmforge.errors import LabelModelError

__all__ = [
    "ABSTAIN",
    "MODELS",
    "LabelModel",
    "LabelModelError",
    "LabelingFunction",
    "labeling_function",
]
