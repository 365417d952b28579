"""Seeded fuzzing of what users hand the data commands: valid CSV and JSON Lines files, cleaning
rules and labeling functions, each mutated at random. Every mutant is either accepted (and a data
file then comes back exactly: exported and added again, it records nothing) or refused in one
line with the repository unchanged. Never a traceback."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fmforge.cli.app import app
from fmforge.data import add_dataset
from fmforge.repository import Repository
from tests.hostile.harness import assert_unchanged, one_line, snapshot, unchanged

runner = CliRunner()

CSV = (
    b"id,text,score,flag,when\n"
    b'1,"hello, world",0.5,true,2024-01-02\n'
    b'2,"say ""hi""\nthere",1e-3,false,\n'
    b"3,caf\xc3\xa9,-7,true,2024-03-04T05:06:07\n"
)
JSONL = (
    b'{"id": 1, "text": "hello", "score": 0.5, "tags": ["a", "b"], "meta": {"k": 1}}\n'
    b'{"id": 2, "text": "caf\\u00e9 \xc3\xa9", "score": -7, "tags": [], "meta": null}\n'
    b'{"id": 3, "text": null, "score": 1e-3, "tags": ["c"], "meta": {"k": 2}}\n'
)
RULES = b"""column: text
rules:
  - drop_empty: {}
  - dedup: {mode: normalized}
  - near_dedup: {threshold: 0.8, permutations: 32, shingle: 4}
  - drop: {regex: "^x+$", min_length: 1, max_length: 500, keywords: [spam, junk]}
  - redact: {kinds: [email, url], replacement: "[{kind}]"}
"""
LFS = b"""labels: [ham, spam]
column: text
lfs:
  - name: kw
    keywords: [subscribe, channel]
    label: spam
  - name: re
    regex: "https?://"
    ignore_case: true
    label: spam
"""
PIECES = [b"\x00", b'"', b",", b"\n", b"\r\n", b"\xff", b"\xe9", b"{", b"}", b"[", b"]", b":",
          b"\\", b"9" * 25, b"-", b".", b"e400", b"NaN", b"&a", b"*a", b"!!python/object:os.system",
          b"\t", b"\xef\xbb\xbf", b"\xc3", b"'", b" ", b"_row_id", b"{}", b"null"]  # fmt: skip


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three random edits: flip a byte, insert a piece, delete or repeat a span, cut."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(out) + 1)
        edit = rng.randrange(5)
        if edit == 0 and out:
            out[min(at, len(out) - 1)] = rng.randrange(256)
        elif edit == 1:
            out[at:at] = rng.choice(PIECES)
        elif edit == 2:
            del out[at : at + rng.randint(1, 8)]
        elif edit == 3:
            out[at:at] = out[at : at + rng.randint(1, 40)]
        else:
            del out[at:]
    return bytes(out)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One repository for the module, with dataset ``t``; each case uses its own names."""
    path = tmp_path_factory.mktemp("fuzz") / "repo"
    path.mkdir()
    source = path.parent / "t.jsonl"
    rows = [{"text": "subscribe to my channel http://x.y"}, {"text": "nice song"}, {"text": ""}]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with Repository.init(path) as repo:
        add_dataset(repo, "t", source)
    return path


def _run(root: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--store", str(root), *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"unexpected {type(result.exception).__name__}: {args}") from (
            result.exception
        )
    return result.exit_code, result.stdout, result.stderr


def _accepted_or_refused(root: Path, *args: str) -> bool:
    """Run the command: True if it was accepted; if refused, one line and nothing changed."""
    before = snapshot(root)
    code, _, err = _run(root, *args)
    if code == 0:
        return True
    line = one_line(err)
    assert line.startswith("fmforge: error: "), line
    assert_unchanged(root, before)
    return False


@pytest.mark.parametrize("seed", range(120))
@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_mutated_data_files(root: Path, tmp_path: Path, kind: str, seed: int) -> None:
    rng = random.Random(f"{kind}-{seed}")
    path = tmp_path / f"in.{kind}"
    path.write_bytes(mutate(CSV if kind == "csv" else JSONL, rng))
    name = f"{kind}{seed}"
    if not _accepted_or_refused(root, "data", "add", name, str(path)):
        return
    out = tmp_path / f"out.{kind}"
    code, _, err = _run(root, "data", "export", name, "-o", str(out))
    if code != 0:  # refused: only for values the format cannot hold, never for its own
        pytest.fail(f"export of an accepted {kind} refused: {err}")
    with unchanged(root):
        code, text, err = _run(root, "data", "add", name, str(out))
        assert code == 0, err
        assert "nothing recorded" in text, text


@pytest.mark.parametrize("seed", range(60))
def test_mutated_rules(root: Path, tmp_path: Path, seed: int) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(mutate(RULES, random.Random(f"rules-{seed}")))
    with unchanged(root):  # a preview records nothing, accepted or not
        code, _, err = _run(root, "data", "clean", "t", "-r", str(path))
        if code != 0:
            assert one_line(err).startswith("fmforge: error: ")


@pytest.mark.parametrize("seed", range(60))
def test_mutated_lfs(root: Path, tmp_path: Path, seed: int) -> None:
    path = tmp_path / "lfs.yaml"
    path.write_bytes(mutate(LFS, random.Random(f"lfs-{seed}")))
    _accepted_or_refused(root, "label", "apply", "t", "--lfs", str(path), "--workers", "1")
