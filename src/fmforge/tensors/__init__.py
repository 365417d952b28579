"""Lossless encodings of tensors and tensor deltas."""

from __future__ import annotations

from fmforge.tensors.codec import KINDS, EncodedTensor, Kind, TensorSpec, decode, encode

__all__ = ["KINDS", "EncodedTensor", "Kind", "TensorSpec", "decode", "encode"]
