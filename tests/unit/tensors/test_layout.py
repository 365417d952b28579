"""Real safetensors files (written by the safetensors library) split and rebuilt byte for byte."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import blake3
import pytest
import torch
from safetensors.torch import save_file

from fmforge.errors import InvalidTensor
from fmforge.tensors.layout import open_tensors, parse_header, read_layout, write_file

DTYPES = {
    "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}  # fmt: skip


def make_file(path: Path) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for i, (name, dtype) in enumerate(DTYPES.items()):
        values = torch.randn(3 + i, 5, generator=generator) * 10
        tensors[f"layer.{i}.{name.lower()}"] = values.to(dtype)
    tensors["scalar"] = torch.tensor(2.5)
    tensors["empty"] = torch.zeros(0, 4)
    save_file(tensors, str(path), metadata={"format": "pt", "note": "fmforge test"})
    return tensors


class TestLayout:
    def test_every_dtype_is_read_and_rebuilt_byte_identical(self, tmp_path: Path) -> None:
        source = tmp_path / "model.safetensors"
        tensors = make_file(source)
        with open_tensors(source) as (layout, views):
            parts = {entry.name: bytes(view) for entry, view in views}
        assert layout.metadata == {"format": "pt", "note": "fmforge test"}
        by_name = {e.name: e for e in layout.entries}
        for name, tensor in tensors.items():
            assert by_name[name].spec.shape == tuple(tensor.shape)
            expected = tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            assert parts[name] == expected, name
        rebuilt = tmp_path / "rebuilt.safetensors"
        write_file(rebuilt, layout.header, parts)
        assert (
            blake3.blake3(rebuilt.read_bytes()).digest()
            == blake3.blake3(source.read_bytes()).digest()
        )

    def test_rebuild_refuses_missing_or_wrong_sized_tensors(self, tmp_path: Path) -> None:
        source = tmp_path / "model.safetensors"
        make_file(source)
        with open_tensors(source) as (layout, views):
            parts = {entry.name: bytes(view) for entry, view in views}
        with pytest.raises(InvalidTensor, match="no bytes for tensor"):
            write_file(tmp_path / "x.safetensors", layout.header, {})
        parts["scalar"] = b"\x00"
        with pytest.raises(InvalidTensor, match="'scalar' has 1 bytes"):
            write_file(tmp_path / "x.safetensors", layout.header, parts)

    @pytest.mark.parametrize(
        ("header", "message"),
        [
            (b"{not json", "not JSON"),
            (b"[]", "not a JSON object"),
            (json.dumps({"w": {"dtype": "F12", "shape": [1], "data_offsets": [0, 4]}}).encode(),
             "dtype .F12., not one of"),
            (json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}).encode(),
             "needs 8"),
            (json.dumps({"w": {"dtype": "U8", "shape": [2**40, 2**40], "data_offsets": [0, 0]}})
             .encode(), "overflows 64 bits"),
            (json.dumps({"a": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}}).encode(),
             "no holes"),
            (json.dumps({"w": {"dtype": "F32"}}).encode(), "tensor 'w' has no 'shape'"),
        ],
    )  # fmt: skip
    def test_malformed_headers_are_named(self, header: bytes, message: str) -> None:
        with pytest.raises(InvalidTensor, match=message):
            parse_header(header, "bad.safetensors")

    def test_truncated_files_are_refused(self, tmp_path: Path) -> None:
        source = tmp_path / "model.safetensors"
        make_file(source)
        data = source.read_bytes()
        for cut, message in [(4, "too short"), (20, "truncated safetensors header"),
                             (len(data) - 1, "its header describes")]:  # fmt: skip
            broken = tmp_path / f"cut{cut}.safetensors"
            broken.write_bytes(data[:cut])
            with pytest.raises(InvalidTensor, match=message):
                read_layout(broken)
        huge = tmp_path / "huge.safetensors"
        huge.write_bytes(struct.pack("<Q", 1 << 40))
        with pytest.raises(InvalidTensor, match="over the format's limit of 100,000,000"):
            read_layout(huge)
