"""Safetensors files: fmforge accepts exactly what the reference loader accepts.

The oracle is the ``safetensors`` library itself: for every file, ``safe_open`` either opens it
or raises. Where it opens it, ``fmforge model commit`` must commit it and ``model checkout``
give it back byte for byte; where it raises, the commit must be refused in one line naming the
problem, with the repository unchanged. The cases below are the defects found in review plus
every rule of the reference's header validation; the fuzz test mutates valid files at random.
"""

from __future__ import annotations

import json
import random
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open

from fmforge.errors import InvalidTensor
from fmforge.models.checkout import checkout
from fmforge.models.commits import commit_model
from fmforge.repository import Repository
from fmforge.tensors.spec import DTYPE_BITS
from tests.clirunner import fm
from tests.hostile.harness import api_refused, cli_refused


def oracle_accepts(path: Path) -> bool:
    try:
        with safe_open(str(path), framework="numpy") as handle:
            list(handle.keys())
    except Exception:  # the reference raises SafetensorError, sometimes others
        return False
    return True


def file_bytes(header: bytes, data: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header + data


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "repo").mkdir()
    Repository.init(tmp_path / "repo").close()
    return tmp_path / "repo"


def round_trips(root: Path, source: Path, name: str, out: Path) -> None:
    code, output = fm(root, "model", "commit", name, str(source), "-m", "accepted")
    assert code == 0, output
    code, output = fm(root, "model", "checkout", f"{name}@main", "-o", str(out))
    assert code == 0, output
    assert (out / source.name).read_bytes() == source.read_bytes()


def refused(root: Path, source: Path, name: str, contains: str | None = None) -> str:
    return cli_refused(root, "model", "commit", name, str(source), "-m", "bad", contains=contains)


# ---- cases: (id, header, data bytes, the reference accepts, words the refusal names) -----------

W = '{"dtype":"F32","shape":[1],"data_offsets":[0,4]}'


def extra(value: str) -> str:
    """A valid header whose tensor has an unknown field holding ``value``."""
    return '{"w":' + W[:-1] + f',"x":{value}}}}}'


def tensor(dtype: str, shape: str, offsets: str) -> str:
    return f'{{"w":{{"dtype":"{dtype}","shape":{shape},"data_offsets":{offsets}}}}}'


CASES: list[tuple[str, str | bytes, int, bool, str | None]] = [
    # the defects of the review (issue 11)
    ("overflow-16x2^60", tensor("U8", "[16,1152921504606846977]", "[0,16]"), 16, False, "overflow"),
    ("shape-float", tensor("U8", "[4.5]", "[0,4]"), 4, False, "shape"),
    ("shape-string", tensor("U8", '["4"]', "[0,4]"), 4, False, "shape"),
    ("shape-bool", tensor("U8", "[true,4]", "[0,4]"), 4, False, "shape"),
    ("offsets-strings", tensor("U8", "[16]", '["0","16"]'), 16, False, "data_offsets"),
    ("overflow-2^40x2^40", tensor("U8", f"[{2**40},{2**40}]", "[0,0]"), 0, False, "overflow"),
    ("nested-100000", '{"w":' + "[" * 100_000 + "]" * 100_000 + "}", 0, False, "nests"),
    ("shape-2^64+16", tensor("U8", f"[{2**64 + 16}]", "[0,16]"), 16, False, "shape"),
    ("overflow-2^32x2^32", tensor("U8", f"[{2**32},{2**32}]", "[0,0]"), 0, False, "overflow"),
    # JSON as serde_json reads it
    ("nan-in-extra-field", extra("NaN"), 4, False, "NaN"),
    ("number-out-of-range", extra("1e400"), 4, False, "out of range"),
    ("integer-out-of-range", extra("1" + "0" * 400), 4, False, "out of range"),
    ("big-integer-in-extra-field", extra("123456789012345678901234567890"), 4, True, None),
    ("lone-surrogate-name", '{"\\ud800":' + W + "}", 4, False, "surrogate"),
    ("lone-trailing-surrogate", '{"\\udc00":' + W + "}", 4, False, "surrogate"),
    ("surrogate-pair-name", '{"\\ud83d\\ude00":' + W + "}", 4, True, None),
    ("depth-127", extra("[" * 125 + "]" * 125), 4, True, None),
    ("depth-128", extra("[" * 126 + "]" * 126), 4, False, "nests"),
    ("trailing-nul-padding", b"{}\x00\x00", 0, False, "not JSON"),
    ("trailing-space-padding", "{}      ", 0, True, None),
    ("utf8-bom", b"\xef\xbb\xbf{}", 0, False, "not JSON"),
    ("not-utf8", b'{"\xff":' + W.encode() + b"}", 4, False, "UTF-8"),
    ("control-character", '{"a\x01":' + W + "}", 4, False, "not JSON"),
    ("empty-header", "", 0, False, "not JSON"),
    ("top-level-array", "[]", 0, False, "not a JSON object"),
    # tensor entries
    ("empty-object", "{}", 0, True, None),
    ("entry-as-array", '{"w":["F32",[1],[0,4]]}', 4, True, None),
    ("entry-array-of-two", '{"w":["F32",[1]]}', 4, False, "2 items"),
    ("entry-null", '{"w":null}', 0, False, "not an object"),
    ("dtype-as-enum-map", tensor("F32", "[1]", "[0,4]").replace('"F32"', '{"F32":null}'), 4, True,
     None),
    ("dtype-map-not-null", tensor("F32", "[1]", "[0,4]").replace('"F32"', '{"F32":1}'), 4, False,
     "dtype"),
    ("dtype-lowercase", tensor("f32", "[1]", "[0,4]"), 4, False, "dtype"),
    ("dtype-unknown", tensor("F12", "[1]", "[0,4]"), 4, False, "dtype"),
    ("field-twice", '{"w":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}', 4,
     False, "twice"),
    ("field-missing", '{"w":{"dtype":"F32","data_offsets":[0,4]}}', 4, False, "shape"),
    ("unknown-field", extra('{"y":[1,2.5,"z",null]}'), 4, True, None),
    ("tensor-twice-last-wins", '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":' + W
     + "}", 4, True, None),
    ("tensor-twice-first-invalid", '{"w":5,"w":' + W + "}", 4, False, "not an object"),
    ("empty-tensor-name", '{"":' + W + "}", 4, True, None),
    ("offsets-three", tensor("F32", "[1]", "[0,4,4]"), 4, False, "data_offsets"),
    ("offsets-negative-zero", tensor("F32", "[1]", "[-0,4]"), 4, False, "data_offsets"),
    ("offsets-reversed", tensor("F32", "[0]", "[4,0]"), 0, False, "holes"),
    ("offsets-hole", tensor("U8", "[2]", "[2,4]"), 4, False, "holes"),
    ("offsets-overlap", '{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},'
     '"b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}', 4, False, "holes"),
    ("size-mismatch", tensor("F32", "[2]", "[0,4]"), 4, False, "needs 8"),
    ("scalar", tensor("F32", "[]", "[0,4]"), 4, True, None),
    ("zero-size-huge-dims", tensor("U8", f"[0,{2**64 - 1}]", "[0,0]"), 0, True, None),
    ("zero-after-huge-overflows", tensor("U8", f"[{2**64 - 1},{2**64 - 1},0]", "[0,0]"), 0, False,
     "overflow"),
    ("bits-overflow", tensor("F64", f"[{2**61}]", "[0,0]"), 0, False, "overflow"),
    ("shape-2^64-1", tensor("U8", f"[{2**64 - 1}]", "[0,0]"), 0, False, "overflow"),
    ("zero-size-tensors-anywhere", '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
     '"b":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},'
     '"c":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}}', 4, True, None),
    # dtypes beyond numpy's
    ("f4-packed", tensor("F4", "[2,3]", "[0,3]"), 3, True, None),
    ("f4-half-byte", tensor("F4", "[3]", "[0,2]"), 2, False, "byte boundary"),
    ("f6", tensor("F6_E2M3", "[4]", "[0,3]"), 3, True, None),
    ("c64", tensor("C64", "[2]", "[0,16]"), 16, True, None),
    ("f8-e8m0", tensor("F8_E8M0", "[3]", "[0,3]"), 3, True, None),
    # metadata
    ("metadata", '{"__metadata__":{"format":"pt","":""},"w":' + W + "}", 4, True, None),
    ("metadata-null", '{"__metadata__":null,"w":' + W + "}", 4, True, None),
    ("metadata-number", '{"__metadata__":{"a":1}}', 0, False, "not a string"),
    ("metadata-array", '{"__metadata__":[]}', 0, False, "__metadata__"),
    ("metadata-twice", '{"__metadata__":{},"__metadata__":{}}', 0, False, "twice"),
    ("metadata-key-twice", '{"__metadata__":{"a":"1","a":"2"}}', 0, True, None),
]  # fmt: skip


class TestReferenceLoaderAgreement:
    @pytest.mark.parametrize(
        ("header", "size", "accepted", "contains"),
        [case[1:] for case in CASES],
        ids=[case[0] for case in CASES],
    )
    def test_case(
        self,
        root: Path,
        tmp_path: Path,
        header: str | bytes,
        size: int,
        accepted: bool,
        contains: str | None,
    ) -> None:
        raw = header.encode("utf-8", "surrogatepass") if isinstance(header, str) else header
        source = tmp_path / "model.safetensors"
        source.write_bytes(file_bytes(raw, bytes(range(size))))
        assert oracle_accepts(source) is accepted, "the reference loader changed its mind"
        if accepted:
            round_trips(root, source, "m", tmp_path / "out")
        else:
            line = refused(root, source, "m", contains)
            assert "model.safetensors" in line, line

    @pytest.mark.parametrize(
        ("blob", "contains"),
        [
            (b"\x02\x00\x00\x00", "too short"),
            (struct.pack("<Q", 100_000_001) + b"{}", "limit"),
            (struct.pack("<Q", 10) + b"{}", "truncated"),
            (file_bytes(b"{}", b"x"), "describes"),
            (file_bytes(W.join(['{"w":', "}"]).encode(), b"\0" * 3), "describes"),
        ],
        ids=["under-8-bytes", "header-over-limit", "header-past-the-end", "data-left-over",
             "data-missing"],
    )  # fmt: skip
    def test_file_framing(self, root: Path, tmp_path: Path, blob: bytes, contains: str) -> None:
        source = tmp_path / "model.safetensors"
        source.write_bytes(blob)
        assert not oracle_accepts(source)
        refused(root, source, "m", contains)

    def test_a_bad_shard_refuses_the_whole_directory_before_storing_anything(
        self, root: Path, tmp_path: Path
    ) -> None:
        model = tmp_path / "model"
        model.mkdir()
        (model / "a.safetensors").write_bytes(file_bytes(W.join(['{"w":', "}"]).encode(), b"1234"))
        (model / "b.safetensors").write_bytes(
            file_bytes(tensor("U8", "[16,1152921504606846977]", "[0,16]").encode(), b"\0" * 16)
        )
        refused(root, model, "m", "b.safetensors")


# ---- fuzz: valid files, mutated at random -------------------------------------------------------


class Obj(list[tuple[str, Any]]):
    """A JSON object as pairs, so a mutation can repeat a key."""


@dataclass(frozen=True)
class Raw:
    text: str  # JSON text written as is (NaN, -0, 1e400, escapes)


def dump(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Obj):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)


DTYPES = sorted(DTYPE_BITS)
ODD_VALUES: list[Any] = [
    None, True, 4.5, "4", -1, 2**64, 2**64 - 1, 2**63, Raw("-0"), Raw("1e400"), Raw("NaN"),
    Raw('"\\ud800"'), [], Obj(), "F32", Raw("[" * 130 + "]" * 130), Raw("[" * 120 + "]" * 120),
]  # fmt: skip
VALID_VALUES: list[Any] = [
    0, 3.5, -7, 123456789012345678901234567890, "text", Raw('"\\ud83d\\ude00"'), Raw("1e-400"),
    Obj([("a", [1, None, True])]), Obj([("k", 1), ("k", 2)]), Raw("[" * 100 + "]" * 100),
]  # fmt: skip


def valid_file(rng: random.Random) -> tuple[Obj, bytes]:
    header = Obj()
    if rng.random() < 0.5:
        header.append(("__metadata__", Obj([("format", "pt"), ("seed", str(rng.random()))])))
    offset = 0
    for i in range(rng.randint(0, 4)):
        dtype = rng.choice(DTYPES)
        shape = [rng.randint(0, 5) for _ in range(rng.randint(0, 3))]
        if DTYPE_BITS[dtype] < 8 and shape:
            shape[-1] *= 8  # packed dtypes end on a byte
        size = DTYPE_BITS[dtype] * _product(shape) // 8
        entry = Obj([("dtype", dtype), ("shape", shape), ("data_offsets", [offset, offset + size])])
        header.append((f"layer.{i}", entry))
        offset += size
    rng.shuffle(header)
    return header, rng.randbytes(offset)


def _product(shape: list[int]) -> int:
    out = 1
    for dim in shape:
        out *= dim
    return out


def mutate_json(rng: random.Random, header: Obj, data: bytes) -> tuple[Obj, bytes]:
    try:
        return _mutate_json(rng, header, data)
    except (KeyError, TypeError, ValueError):  # an entry an earlier mutation broke already
        header.append(("w", rng.choice(ODD_VALUES)))
        return header, data


def _mutate_json(rng: random.Random, header: Obj, data: bytes) -> tuple[Obj, bytes]:
    tensors = [i for i, (k, v) in enumerate(header) if k != "__metadata__" and isinstance(v, Obj)]
    if not tensors:
        header.append((rng.choice(["w", "__metadata__"]), rng.choice(ODD_VALUES)))
        return header, data
    index = rng.choice(tensors)
    name, entry = header[index]
    fields = dict(entry)
    choice = rng.randrange(12)
    if choice == 0:  # another dtype, or not a dtype
        fields["dtype"] = rng.choice([*DTYPES, "f32", "", 1, Obj([("F32", None)]), ["F32"]])
    elif choice == 1:  # the same elements in another arrangement (often still valid)
        shape = list(fields["shape"])
        rng.shuffle(shape)
        fields["shape"] = [*shape, 1] if rng.random() < 0.3 else shape
    elif choice == 2:  # a shape value of the wrong kind or size
        shape = list(fields["shape"]) or [1]
        shape[rng.randrange(len(shape))] = rng.choice(ODD_VALUES)
        fields["shape"] = shape
    elif choice == 3:  # overflowing products
        fields["shape"] = rng.choice(
            [[2**40, 2**40], [2**32, 2**32], [0, 2**64 - 1], [2**64 - 1, 2, 0], [2**61]]
        )
    elif choice == 4:  # offsets nudged, swapped or of the wrong kind
        begin, end = fields["data_offsets"]
        fields["data_offsets"] = rng.choice(
            [[begin, end + 1], [begin + 1, end + 1], [end, begin], [str(begin), str(end)],
             [begin, end, end], [begin], [float(begin), end], [Raw("-0"), end]]
        )  # fmt: skip
    elif choice == 5:  # a field dropped
        fields.pop(rng.choice(["dtype", "shape", "data_offsets"]))
    elif choice == 6:  # an unknown field with any value
        fields["extra"] = rng.choice(ODD_VALUES + VALID_VALUES)
    elif choice == 7:  # the entry as an array, maybe of the wrong length
        items = [fields.get("dtype"), fields.get("shape"), fields.get("data_offsets")]
        header[index] = (name, items[: rng.choice([3, 3, 2])])
        return header, data
    elif choice == 8:  # a key repeated
        header.insert(rng.randrange(len(header) + 1), rng.choice([header[index], (name, 5)]))
        return header, data
    elif choice == 9:  # the entry replaced by something else
        header[index] = (rng.choice([name, "__metadata__"]), rng.choice(ODD_VALUES))
        return header, data
    elif choice == 10:  # the last tensor resized consistently (data follows)
        last = max(tensors, key=lambda i: dict(header[i][1])["data_offsets"][0])
        name, entry = header[last]
        fields = dict(entry)
        grown = rng.randint(0, 6) * 8
        begin = fields["data_offsets"][0]
        size = DTYPE_BITS[fields["dtype"]] * grown // 8
        fields["shape"], fields["data_offsets"] = [grown], [begin, begin + size]
        header[last] = (name, Obj(fields.items()))
        return header, data[:begin] + rng.randbytes(size)
    else:  # metadata of the wrong kind
        header.append(("__metadata__", rng.choice([Obj([("a", 1)]), None, Obj(), [], "x"])))
        return header, data
    header[index] = (name, Obj(fields.items()))
    return header, data


def mutate_bytes(rng: random.Random, raw: bytes) -> bytes:
    """Bytes changed after the header is written (its length prefix still says the truth)."""
    header_end = 8 + struct.unpack("<Q", raw[:8])[0]
    header = bytearray(raw[8:header_end])
    choice = rng.randrange(5)
    if choice == 0 and header:
        header[rng.randrange(len(header))] = rng.randrange(256)
    elif choice == 1:
        header.insert(rng.randrange(len(header) + 1), rng.choice(b' \t\n"[]{},:0\\x\x00\xff'))
    elif choice == 2 and header:
        del header[rng.randrange(len(header))]
    elif choice == 3:
        header += rng.choice([b"   ", b"\x00", b"\n", b"x"])
    else:
        header = bytearray(rng.choice([b"\xef\xbb\xbf", b" ", b"\t"])) + header
    return struct.pack("<Q", len(header)) + bytes(header) + raw[header_end:]


def mutate_framing(rng: random.Random, raw: bytes) -> bytes:
    choice = rng.randrange(4)
    if choice == 0:  # a length prefix that lies
        (length,) = struct.unpack("<Q", raw[:8])
        wrong = rng.choice([length - 1, length + 1, 0, 100_000_001, 2**64 - 1, 2**63])
        return struct.pack("<Q", max(wrong, 0)) + raw[8:]
    if choice == 1:  # truncated anywhere
        return raw[: rng.randrange(len(raw))]
    if choice == 2:  # bytes added after the buffer
        return raw + rng.randbytes(rng.randint(1, 9))
    return raw  # left valid


FUZZ_CASES = 300


def test_mutated_files_agree_with_the_reference_loader(root: Path, tmp_path: Path) -> None:
    """A few hundred seeded mutations of valid files: the oracle's verdict is fmforge's, a
    refusal is one line with the repository unchanged, an acceptance round-trips exactly.
    (Through the Python API: the CLI's start-up would be most of the time.)"""
    rng = random.Random(20_251_130)
    verdicts = {True: 0, False: 0}
    with Repository.open(root) as repo:
        for case in range(FUZZ_CASES):
            header, data = valid_file(rng)
            for _ in range(rng.choice([0, 1, 1, 2])):
                header, data = mutate_json(rng, header, data)
            text = dump(header).encode("utf-8", "surrogatepass")
            raw = file_bytes(text + b" " * (-len(text) % 8), data)
            kind = rng.random()
            if kind < 0.25:
                raw = mutate_bytes(rng, raw)
            elif kind < 0.45:
                raw = mutate_framing(rng, raw)
            source = tmp_path / f"case{case}" / "model.safetensors"
            source.parent.mkdir()
            source.write_bytes(raw)
            accepted = oracle_accepts(source)
            verdicts[accepted] += 1
            try:
                if accepted:
                    commit_model(repo, f"f{case}", source, "accepted")
                    out = checkout(repo, f"f{case}@main", tmp_path / f"out{case}").directory
                    assert (out / source.name).read_bytes() == raw
                else:
                    api_refused(
                        root,
                        lambda: commit_model(repo, f"f{case}", source, "bad"),  # noqa: B023
                        InvalidTensor,
                        contains=str(source),
                    )
            except AssertionError as exc:
                raise AssertionError(f"case {case} ({raw[:300]!r}): {exc}") from exc
    assert min(verdicts.values()) > FUZZ_CASES // 10, verdicts  # both sides well exercised
