"""PyTorch state-dict files (``pytorch_model.bin``), read safely and written back.

Reading uses ``torch.load(weights_only=True)``: the restricted unpickler that builds tensors and
plain containers only, never arbitrary objects. A file that holds anything but a flat mapping of
names to tensors is refused with one line saying why (files that are not weights by name, such
as ``training_args.bin``, never come here). Torch is imported only here, when needed.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fmforge.errors import InvalidModelSource, InvalidTensor
from fmforge.tensors.codec import TensorSpec

# torch dtype name -> safetensors dtype name
_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8",
    "uint16": "U16", "uint32": "U32", "uint64": "U64", "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "float8_e8m0fnu": "F8_E8M0",
    "float8_e4m3fnuz": "F8_E4M3FNUZ", "float8_e5m2fnuz": "F8_E5M2FNUZ", "complex64": "C64",
}  # fmt: skip


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise InvalidModelSource(
            "reading or writing PyTorch .bin weights needs torch (pip install torch)"
        ) from None
    return torch


def _torch_load(path: Path) -> Any:
    """``torch.load`` with the weights-only unpickler (mmap'd when the format allows); any
    failure becomes one line saying why the file is not a plain state dict."""
    torch = _torch()
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols: not ours to print
            warnings.simplefilter("ignore")
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap can only be used" not in str(exc):
                    raise
                # the legacy (pre-zip) format cannot be mapped: read it, still weights-only
                return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = re.search(
            r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", text, re.S
        )
        reason = " ".join((found.group(1) if found else text).split())
        if "Weights only load failed" in text:
            raise InvalidModelSource(
                f"{path}: a pickle that is not a plain state dict: the weights-only loader "
                f"refused it ({reason[:200]}); fmforge never runs other pickles"
            ) from None
        raise InvalidModelSource(f"{path}: not a PyTorch weights file ({reason[:200]})") from None
    except Exception as exc:  # torch raises many kinds for bytes that are not its format
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidModelSource(f"{path}: not a PyTorch weights file ({first[:200]})") from None


def load_torch_state_dict(
    path: str | os.PathLike[str],
) -> dict[str, tuple[TensorSpec, memoryview]]:
    """name -> (spec, raw little-endian bytes) of a flat state dict; ``InvalidModelSource``
    naming the problem for anything else (another pickle, nested dicts, non-tensor values)."""
    torch = _torch()
    loaded = _torch_load(Path(path))
    if not isinstance(loaded, Mapping):
        raise InvalidModelSource(
            f"{path}: holds {type(loaded).__name__}, not a state dict (names -> tensors)"
        )
    out: dict[str, tuple[TensorSpec, memoryview]] = {}
    for name, tensor in loaded.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise InvalidModelSource(
                f"{path}: entry {str(name)[:60]!r} is {type(tensor).__name__}, not a tensor: "
                "not a plain state dict (names -> tensors)"
            )
        dtype = _DTYPES.get(str(tensor.dtype).removeprefix("torch."))
        if dtype is None:
            raise InvalidModelSource(
                f"{path}: tensor {name[:60]!r} has unsupported dtype {tensor.dtype}"
            )
        spec = TensorSpec(dtype, tuple(tensor.shape))
        flat = tensor.detach().contiguous().reshape(-1)
        data = flat.view(torch.uint8).numpy() if flat.numel() else b""
        out[name] = (spec, memoryview(data).cast("B"))
    return out


def save_torch_state_dict(
    path: str | os.PathLike[str], tensors: Mapping[str, tuple[TensorSpec, bytes | memoryview]]
) -> None:
    """Write a state dict whose tensors have exactly these bytes."""
    torch = _torch()
    by_name = {v: k for k, v in _DTYPES.items()}
    state = {}
    for name, (spec, data) in tensors.items():
        dtype = getattr(torch, by_name[spec.dtype])
        flat = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else None
        if flat is None:
            state[name] = torch.empty(spec.shape, dtype=dtype)
        else:
            state[name] = flat.view(dtype).reshape(spec.shape).clone()
    torch.save(state, Path(path))


def to_torch(array: Any, spec: TensorSpec) -> Any:
    """A torch tensor over ``array``'s bytes, with ``spec``'s dtype (bfloat16 and fp8 too)."""
    torch = _torch()
    by_name = {v: k for k, v in _DTYPES.items()}
    dtype = getattr(torch, by_name.get(spec.dtype, ""), None)
    if dtype is None:
        raise InvalidTensor(f"this torch has no dtype for {spec.dtype}: use framework='numpy'")
    if array.size == 0:
        return torch.empty(spec.shape, dtype=dtype)
    raw = torch.from_numpy(array.reshape(-1).view("uint8").copy())
    return raw.view(dtype).reshape(spec.shape)
