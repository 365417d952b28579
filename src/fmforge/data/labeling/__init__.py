"""Weak supervision: label models over label matrices (rows x labeling functions), and LFs
synthesized from an intent and labelled examples (``synthesize``)."""

from fmforge.data.labeling.endmodel import EndModelResult, EndModelSpec, end_model
from fmforge.data.labeling.functions import LabelingFunction, labeling_function
from fmforge.data.labeling.model import ABSTAIN, MODELS, LabelModel
from fmforge.data.labeling.synth import SynthResult, SynthSpec, synthesize
from fmforge.errors import LabelModelError

__all__ = [
    "ABSTAIN",
    "MODELS",
    "EndModelResult",
    "EndModelSpec",
    "LabelModel",
    "LabelModelError",
    "LabelingFunction",
    "SynthResult",
    "SynthSpec",
    "end_model",
    "labeling_function",
    "synthesize",
]
