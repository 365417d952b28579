"""`fmforge model ...` through the CLI runner, on a real repository and real safetensors files."""

from __future__ import annotations

import json
from pathlib import Path

from tests.clirunner import fm
from tests.modelfiles import adam_step, base_weights, same_files, write_model


def test_a_whole_model_workflow(tmp_path: Path) -> None:
    store = tmp_path / "repo"
    store.mkdir()
    assert fm(store, "init")[0] == 0
    weights = base_weights()
    v1 = write_model(tmp_path / "v1", weights)
    v2 = write_model(tmp_path / "v2", adam_step(weights, 1))

    code, out = fm(store, "model", "commit", "tiny", str(v1), "-m", "base model")
    assert code == 0, out
    assert "5 tensors: 0 unchanged" in out
    code, out = fm(store, "model", "commit", "tiny", str(v2), "-m", "one step")
    assert code == 0, out
    assert "of a full copy" in out

    code, out = fm(store, "model", "tag", "tiny", "v1.0", "main~1")
    assert code == 0, out
    code, out = fm(store, "model", "branch", "tiny", "experiment", "v1.0")
    assert code == 0, out
    code, out = fm(store, "model", "branch", "tiny")
    assert "experiment" in out
    assert "main" in out

    code, out = fm(store, "model", "log", "tiny", "--json")
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["message"] for r in records] == ["one step", "base model"]
    assert "tag: v1.0" in records[1]["refs"]
    assert "experiment" in records[1]["refs"]

    code, out = fm(store, "model", "checkout", "tiny@v1.0", "-o", str(tmp_path / "out1"))
    assert code == 0, out
    assert same_files(v1, tmp_path / "out1")

    code, out = fm(store, "model", "reset", "tiny", "main", "v1.0")
    assert code == 0, out
    code, out = fm(store, "model", "checkout", "tiny", "-o", str(tmp_path / "out2"))
    assert same_files(v1, tmp_path / "out2")
    code, out = fm(store, "model", "checkout", "tiny@main@{2999-01-01}", "-o", str(tmp_path / "o3"))
    assert same_files(v1, tmp_path / "o3")

    code, out = fm(store, "model", "show", "tiny@v1.0")
    assert "base model" in out
    assert "(none)" in out
    code, out = fm(store, "model", "ls")
    assert "tiny" in out

    code, out = fm(store, "verify")
    assert code == 0, out


def test_model_errors_are_one_line(tmp_path: Path) -> None:
    store = tmp_path / "repo"
    store.mkdir()
    fm(store, "init")
    code, out = fm(store, "model", "log", "ghost")
    assert code == 1
    assert out.startswith("fmforge: error: no model named 'ghost'")
    code, out = fm(store, "model", "commit", "tiny", str(tmp_path / "nothing"), "-m", "x")
    assert code == 1
    assert "no such file or directory" in out
    write_model(tmp_path / "v1", base_weights())
    fm(store, "model", "commit", "tiny", str(tmp_path / "v1"), "-m", "base")
    code, out = fm(store, "model", "tag", "tiny", "v1")
    code, out = fm(store, "model", "tag", "tiny", "v1")
    assert code == 1
    assert "tags do not move" in out
    code, out = fm(store, "model", "checkout", "tiny@nope", "-o", str(tmp_path / "o"))
    assert code == 1
    assert "no branch, tag or commit 'nope'" in out


def test_diff_graph_and_remotes_through_the_cli(tmp_path: Path) -> None:
    store = tmp_path / "repo"
    store.mkdir()
    fm(store, "init")
    weights = base_weights()
    fm(store, "model", "commit", "tiny", str(write_model(tmp_path / "v1", weights)), "-m", "base")
    changed = dict(weights)
    changed["layer.0.norm.bias"] = changed["layer.0.norm.bias"] + 0.5
    code, out = fm(
        store, "model", "commit", "tiny", str(write_model(tmp_path / "v2", changed)),
        "-m", "bias", "--branch", "exp", "--parent", "main",
    )  # fmt: skip
    assert code == 0, out

    code, out = fm(store, "model", "diff", "tiny@main", "exp", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["counts"] == {"unchanged": 4, "changed": 1, "added": 0, "removed": 0}
    (bias,) = [t for t in report["tensors"] if t["status"] == "changed"]
    assert bias["name"] == "layer.0.norm.bias"
    assert bias["max_abs"] == 0.5
    assert bias["fraction_changed"] == 1.0
    assert [layer["layer"] for layer in report["layers"] if layer["changed"]] == ["layer.0"]
    code, out = fm(store, "model", "diff", "tiny@main", "exp")
    assert "layer.0.norm.bias" in out
    assert "1 changed, 0 added, 0 removed, 4 unchanged" in out

    code, out = fm(store, "model", "log", "tiny", "--graph")
    lines = out.splitlines()
    assert len(lines) == 2
    assert "(exp) bias" in lines[0]
    assert "(main) base" in lines[1]

    remote = tmp_path / "shared"
    assert fm(store, "remote", "add", "origin", str(remote))[0] == 0
    assert "origin" in fm(store, "remote", "ls")[1]
    code, out = fm(store, "push", "origin", "tiny")
    assert code == 0, out
    assert "pushed tiny: 2 commits" in out
    code, out = fm(tmp_path, "clone", str(remote), str(tmp_path / "copy"))
    assert code == 0, out
    code, out = fm(tmp_path / "copy", "model", "checkout", "tiny@exp", "-o", str(tmp_path / "o"))
    assert code == 0, out
    assert same_files(tmp_path / "v2", tmp_path / "o")
    code, out = fm(store, "push", "nowhere", "tiny")
    assert code == 1
    assert out.startswith("fmforge: error: no remote named 'nowhere'")


def test_committing_the_same_model_again_stores_nothing_new(tmp_path: Path) -> None:
    """The second commit of an identical directory adds no tensor, file or header object: it
    reports 0 new bytes, still names every file and header object it uses as refs, verifies."""
    from fmforge.models import ModelRefs
    from fmforge.models.writer import load_manifest, manifest_objects
    from fmforge.repository import Repository

    store = tmp_path / "repo"
    store.mkdir()
    assert fm(store, "init")[0] == 0
    model = write_model(tmp_path / "v1", base_weights())
    code, out = fm(store, "model", "commit", "tiny", str(model), "-m", "first")
    assert code == 0, out
    first_objects = {p for p in (store / ".fmforge" / "objects").rglob("*") if p.is_file()}
    code, out = fm(store, "model", "commit", "tiny", str(model), "-m", "again")
    assert code == 0, out
    assert "5 tensors: 5 unchanged, 0 deltas, 0 full" in out
    assert "stored 0 new bytes for " in out
    added = {p for p in (store / ".fmforge" / "objects").rglob("*") if p.is_file()}
    assert added == first_objects  # even the manifest: it lists the same files and tensors
    with Repository.open(store) as repo:
        index = repo.view(ModelRefs)
        head = index.commit(index.resolve("tiny", "main"))
        assert head.stored_bytes == 0
        event = list(repo.ledger.read_all(1, types=["ModelCommitted"]))[-1]
        manifest = load_manifest(repo, head.manifest)
        files = {f["object"] for f in manifest["files"] if f["kind"] == "blob"}
        headers = {f["header"] for f in manifest["files"] if f["kind"] == "safetensors"}
        assert files | headers | {head.manifest} <= set(event.refs)
        assert set(event.refs) <= manifest_objects(head.manifest, manifest)
    code, out = fm(store, "verify")
    assert code == 0, out
    code, out = fm(store, "model", "show", "tiny@main")
    assert "0 new bytes stored" in out
