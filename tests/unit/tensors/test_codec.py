"""Every encoding gives back the exact bits, for every dtype, against any parent."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fmforge.errors import CorruptTensor, InvalidTensor
from fmforge.tensors import KINDS, EncodedTensor, TensorSpec, decode, encode
from fmforge.tensors.codec import DTYPE_BITS, ENCODINGS, ITEMSIZE, encoded_sizes

rng = np.random.default_rng(1234)


def random_bits(spec: TensorSpec, seed: int) -> bytes:
    return np.random.default_rng(seed).bytes(spec.nbytes)


def to_bf16(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, rounding to nearest even as torch does."""
    bits = values.astype(np.float32).view(np.uint32)
    return ((bits + ((bits >> 16) & 1) + 0x7FFF) >> 16).astype(np.uint16)


def weights(shape: tuple[int, ...], dtype: str = "F32", scale: float = 0.05) -> bytes:
    values = rng.standard_normal(shape).astype(np.float32) * scale
    if dtype == "BF16":
        return (values.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    return values.astype({"F32": np.float32, "F16": np.float16, "F64": np.float64}[dtype]).tobytes()


class TestRoundTrip:
    @pytest.mark.parametrize("dtype", sorted(DTYPE_BITS))
    @pytest.mark.parametrize("kind", KINDS)
    def test_every_dtype_and_kind_on_arbitrary_bits(self, dtype: str, kind: str) -> None:
        spec = TensorSpec(dtype, (64, 48))
        child, parent = random_bits(spec, 1), random_bits(spec, 2)
        try:
            encoded = encode(child, spec, parent, kinds=[kind])  # type: ignore[list-item]
        except InvalidTensor:
            assert kind in ("sparse", "lowrank"), "raw and xor always apply"
            return
        assert encoded.kind == kind
        assert decode(encoded, spec, parent) == child

    @settings(max_examples=60, deadline=None)
    @given(
        dtype=st.sampled_from(sorted(ITEMSIZE)),
        rows=st.integers(0, 40),
        cols=st.integers(1, 40),
        seed=st.integers(0, 2**32 - 1),
        changed=st.floats(0, 1),
    )
    def test_best_encoding_of_a_partly_changed_tensor(
        self, dtype: str, rows: int, cols: int, seed: int, changed: float
    ) -> None:
        spec = TensorSpec(dtype, (rows, cols))
        gen = np.random.default_rng(seed)
        parent = gen.bytes(spec.nbytes)
        child = bytearray(parent)
        flips = gen.random(spec.nbytes) < changed / spec.itemsize
        for i in np.flatnonzero(flips):
            child[i] ^= int(gen.integers(1, 256))
        encoded = encode(bytes(child), spec, parent)
        assert decode(encoded, spec, parent) == bytes(child)
        alone = encode(bytes(child), spec)
        assert alone.kind == "raw"
        assert decode(alone, spec) == bytes(child)

    @pytest.mark.parametrize("dtype", ["F32", "F16", "BF16", "F64"])
    def test_special_float_values_survive(self, dtype: str) -> None:
        specials = {
            "F32": np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -3.4e38], np.float32),
            "F16": np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 6e-8, -65504], np.float16),
            "F64": np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, -1.7e308], np.float64),
        }
        if dtype == "BF16":
            base = specials["F32"].view(np.uint32) >> 16
            values = base.astype(np.uint16)
        else:
            values = specials[dtype]
        raw = np.tile(values, 32 * 16 // len(values) + 1)[: 32 * 16].tobytes()
        spec = TensorSpec(dtype, (32, 16))
        nan_payload = bytearray(raw)
        nan_payload[5] ^= 0x01  # a NaN with another payload, a subnormal nudged
        for kind in KINDS:
            try:
                encoded = encode(bytes(nan_payload), spec, raw, kinds=[kind])  # type: ignore[list-item]
            except InvalidTensor:
                continue
            assert decode(encoded, spec, raw) == bytes(nan_payload)

    def test_scalar_and_empty_tensors(self) -> None:
        scalar = TensorSpec("F32", ())
        data = np.float32(3.5).tobytes()
        assert decode(encode(data, scalar), scalar) == data
        empty = TensorSpec("BF16", (0, 7))
        assert decode(encode(b"", empty, b""), empty, b"") == b""


class TestChoice:
    def test_unchanged_tensor_costs_almost_nothing(self) -> None:
        spec = TensorSpec("F32", (256, 256))
        data = weights(spec.shape)
        encoded = encode(data, spec, data)
        assert encoded.size < 200
        assert decode(encoded, spec, data) == data

    def test_dense_small_update_uses_a_bitwise_delta_and_shrinks(self) -> None:
        spec = TensorSpec("F32", (384, 384))
        parent = np.frombuffer(weights(spec.shape), np.float32)
        child = parent * (1 + rng.standard_normal(parent.size).astype(np.float32) * 0.005)
        sizes = encoded_sizes(child.tobytes(), spec, parent.tobytes())
        encoded = encode(child.tobytes(), spec, parent.tobytes())
        assert encoded.kind in ("xor", "diff"), sizes
        assert encoded.size < 0.7 * spec.nbytes, sizes
        assert decode(encoded, spec, parent.tobytes()) == child.tobytes()

    def test_sparse_update_uses_sparse(self) -> None:
        spec = TensorSpec("F32", (512, 512))
        parent = np.frombuffer(weights(spec.shape), np.float32)
        child = parent.copy()
        picked = rng.choice(child.size, size=child.size // 50, replace=False)
        child[picked] += rng.standard_normal(picked.size).astype(np.float32) * 0.01
        encoded = encode(child.tobytes(), spec, parent.tobytes())
        assert encoded.kind == "sparse"
        assert encoded.size < 0.05 * spec.nbytes
        assert decode(encoded, spec, parent.tobytes()) == child.tobytes()

    @pytest.mark.parametrize("dtype", ["F32", "BF16"])
    def test_merged_lora_uses_low_rank(self, dtype: str) -> None:
        rows, cols, rank = 384, 384, 8
        spec = TensorSpec(dtype, (rows, cols))
        parent32 = rng.standard_normal((rows, cols)).astype(np.float32) * 0.05
        b = rng.standard_normal((rows, rank)).astype(np.float32) * 0.02
        a = rng.standard_normal((rank, cols)).astype(np.float32) * 0.02
        merged32 = parent32 + b @ a  # what merge_and_unload computes, in float32
        if dtype == "BF16":
            parent = to_bf16(parent32).tobytes()
            as32 = (np.frombuffer(parent, np.uint16).astype(np.uint32) << 16).view(np.float32)
            child = to_bf16(as32.reshape(rows, cols) + b @ a).tobytes()
        else:
            parent, child = parent32.tobytes(), merged32.tobytes()
        sizes = encoded_sizes(child, spec, parent)
        encoded = encode(child, spec, parent)
        assert encoded.kind == "lowrank", sizes
        # In all-MiniLM-L6-v2 the attention matrices are ~15% of the parameters, so the issue's
        # bars (0.02 of a full copy in fp32, 0.03 in bf16) allow ~13% / ~19% per matrix.
        assert encoded.size < (0.12 if dtype == "F32" else 0.15) * spec.nbytes, sizes
        assert decode(encoded, spec, parent) == child


class TestRegistry:
    def test_kinds_keep_their_stored_numbers(self) -> None:
        # models.storage writes KINDS.index(kind) into every tensor object: append only.
        assert KINDS == ("raw", "xor", "diff", "sparse", "lowrank")
        assert all(ENCODINGS[kind].name == kind for kind in KINDS)

    def test_each_encoding_module_stays_small(self) -> None:
        from fmforge.tensors import encodings

        for module in Path(encodings.__file__).parent.glob("*.py"):
            assert len(module.read_text().splitlines()) < 300, module.name

    def test_packed_sub_byte_dtypes_must_end_on_a_byte(self) -> None:
        assert TensorSpec("F4", (3, 2)).nbytes == 3
        assert TensorSpec("F6_E2M3", (4,)).nbytes == 3
        with pytest.raises(InvalidTensor, match="byte boundary"):
            TensorSpec("F4", (3,))
        with pytest.raises(InvalidTensor, match="sizes >= 0"):
            TensorSpec("F32", (True, 2))


class TestErrors:
    def test_wrong_length_names_the_tensor(self) -> None:
        with pytest.raises(InvalidTensor, match=r"F32\[2, 2\] needs 16 bytes, got 15"):
            encode(b"x" * 15, TensorSpec("F32", (2, 2)))

    def test_unknown_dtype(self) -> None:
        with pytest.raises(InvalidTensor, match="unknown dtype 'F12'"):
            TensorSpec("F12", (1,))

    def test_delta_without_parent(self) -> None:
        spec = TensorSpec("I8", (4,))
        encoded = encode(b"abcd", spec, b"abce", kinds=["xor"])
        with pytest.raises(InvalidTensor, match="needs its parent"):
            decode(encoded, spec)

    def test_damaged_payload(self) -> None:
        spec = TensorSpec("F32", (64,))
        encoded = encode(weights((64,)), spec)
        damaged = EncodedTensor(encoded.kind, (encoded.payload[:-3],))
        with pytest.raises(CorruptTensor):
            decode(damaged, spec)


class TestChunkedPaths:
    """Tensors above the chunk size go through streaming compression and decompression."""

    @pytest.mark.parametrize("kind", ["raw", "xor", "diff"])
    @pytest.mark.parametrize("dtype", ["F32", "BF16", "I8"])
    def test_large_tensors_round_trip_in_every_dense_kind(self, kind: str, dtype: str) -> None:
        from fmforge.tensors.encodings.planes import CHUNK as _CHUNK

        spec = TensorSpec(dtype, (2 * _CHUNK + 12345,))  # crosses chunk edges, ends mid-chunk
        gen = np.random.default_rng(7)
        parent = gen.bytes(spec.nbytes)
        child = bytearray(parent)
        for i in gen.integers(0, spec.nbytes, 5000):
            child[i] ^= 0x5A
        encoded = encode(bytes(child), spec, parent, kinds=[kind])  # type: ignore[list-item]
        assert encoded.kind == kind
        assert len(encoded.parts) > spec.itemsize + 1  # streamed in pieces, never joined
        assert decode(encoded, spec, parent) == bytes(child)


class TestStoredFormats:
    """Payloads written by earlier versions (``golden_encodings.json``) decode to the same bits:
    a stored encoding's format never changes under a repository."""

    CASES = json.loads((Path(__file__).parent / "golden_encodings.json").read_text())

    @pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
    def test_stored_payload_decodes_bit_exactly(self, case: dict[str, Any]) -> None:
        spec = TensorSpec(case["dtype"], tuple(case["shape"]))
        parent = None if case["parent"] is None else base64.b64decode(case["parent"])
        encoded = EncodedTensor(case["kind"], (base64.b64decode(case["payload"]),))
        assert decode(encoded, spec, parent) == base64.b64decode(case["child"])
