"""Lossless encodings of tensors and tensor deltas (``codec``, one module per encoding in
``encodings``), tensor specs (``spec``) and the safetensors layout (``layout``)."""

from __future__ import annotations

from fmforge.tensors.codec import KINDS, EncodedTensor, Kind, TensorSpec, decode, encode

__all__ = ["KINDS", "EncodedTensor", "Kind", "TensorSpec", "decode", "encode"]
