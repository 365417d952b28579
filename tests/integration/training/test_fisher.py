"""The diagonal Fisher (stored, recorded, read back) and FishMask (trained through the masks
seam, committed as sparse deltas on the base, pushed as a small upload)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fmforge.errors import FisherNotFound
from fmforge.models import CommitReader, ModelRefs, create_branch, delete_branch, load_state_dict
from fmforge.models.fishers import ModelFishers
from fmforge.models.maintenance import prunable_objects
from fmforge.remotes import add_remote, push
from fmforge.repository import Repository
from fmforge.tracking import load_run
from fmforge.training import FinetuneSpec, finetune, replay
from fmforge.training.fisher import compute_fisher, load_fisher, read_fisher
from fmforge.training.modeling import MASK_FILE


def spec(**changes: object) -> FinetuneSpec:
    values = {"base": "tiny", "data": "spam", "eval_split": "valid", "batch_size": 8,
              "epochs": 1, "threads": 1, **changes}  # fmt: skip
    return FinetuneSpec.parse(values)


def test_the_fisher_is_deterministic_and_shaped_as_the_commit(spam_repo: Repository) -> None:
    repo = spam_repo
    first = compute_fisher(repo, "tiny", "spam", split="train", task="classification", examples=12)
    again = compute_fisher(repo, "tiny", "spam", split="train", task="classification", examples=12)
    assert again.object == first.object  # the same bytes: seeded order, one example at a time
    assert first.examples == 12
    assert first.dataset == "spam@v2:train"
    fisher = load_fisher(repo, "tiny")
    with load_state_dict("tiny", repo=repo) as state:
        assert set(fisher) == set(state)  # the base's names; the random new head left out
        for name, value in fisher.items():
            assert value.shape == state[name].shape, name
            assert value.dtype == torch.float32
    assert all(torch.isfinite(v).all() and (v >= 0).all() for v in fisher.values())
    assert sum(float(v.sum()) for v in fisher.values()) > 0
    record = repo.view(ModelFishers).fisher(repo.view(ModelRefs).resolve("tiny", "main"))
    assert record is not None
    assert (record.object, record.kind, record.examples) == (first.object, "empirical", 12)
    (event,) = [e for e in repo.ledger.read_stream("model/tiny") if e.type == "FisherComputed"][1:]
    assert first.object in event.refs  # gc and verify see the object through the event

    other = compute_fisher(repo, "tiny", "spam", split="train", task="classification",
                           examples=12, seed=1)  # fmt: skip
    true = compute_fisher(repo, "tiny", "spam", split="train", task="classification",
                          examples=12, kind="true")  # fmt: skip
    assert len({first.object, other.object, true.object}) == 3
    assert torch.equal(load_fisher(repo, "tiny")["pooler.dense.weight"],
                       read_fisher(repo, true.object)["pooler.dense.weight"])  # newest  # fmt: skip
    assert repo.verify().view_differences == ()


def test_an_adapter_fisher_has_its_base_names_and_its_head(spam_repo: Repository) -> None:
    repo = spam_repo
    lora = finetune(repo, spec())
    result = compute_fisher(repo, lora.commit_ref, "spam", split="train", examples=8, kind="true")
    fisher = load_fisher(repo, lora.commit_ref)
    with load_state_dict("tiny", repo=repo) as base:
        assert set(base) <= set(fisher)
        assert set(fisher) - set(base) == {"classifier.weight", "classifier.bias"}
    assert result.task == "classification"
    lm = compute_fisher(repo, "tiny-lm", "spam", examples=6, kind="true")
    assert compute_fisher(repo, "tiny-lm", "spam", examples=6, kind="true").object == lm.object
    with load_state_dict("tiny-lm", repo=repo) as state:
        assert set(load_fisher(repo, "tiny-lm")) <= set(state)


def test_gc_keeps_a_fisher_as_long_as_its_commit(spam_repo: Repository) -> None:
    repo = spam_repo
    kept = compute_fisher(repo, "tiny", "spam", split="train", task="classification", examples=4)
    create_branch(repo, "tiny", "scratch", "main")
    full = finetune(repo, spec(method="full", output="tiny@scratch", eval_split=None))
    dropped = compute_fisher(repo, full.commit_ref, "spam", split="train", examples=4)
    prunable, _ = prunable_objects(repo, 0.0)
    assert kept.object not in prunable
    assert dropped.object not in prunable
    delete_branch(repo, "tiny", "scratch", force=True)
    prunable, commits = prunable_objects(repo, 0.0)
    assert full.commit in commits
    assert dropped.object in prunable
    assert kept.object not in prunable
    with pytest.raises(FisherNotFound, match="no Fisher recorded for tiny-lm@"):
        load_fisher(repo, "tiny-lm")


def test_fishmask_commits_sparse_deltas_on_the_base_and_pushes_small(
    spam_repo: Repository, tmp_path: Path
) -> None:
    repo = spam_repo
    add_remote(repo, "origin", str(tmp_path / "remote"))
    first = push(repo, "origin", "tiny", branch="main")
    index = repo.view(ModelRefs)
    base = index.commit(index.resolve("tiny", "main"))
    result = finetune(repo, spec(method="sparse", keep="0.5%", lr=1e-2))

    # The mask: FishMask from the Fisher it computed and recorded on the base commit.
    mask = load_run(repo, result.run).config["mask"]
    assert mask["source"] == "fisher"
    assert mask["fisher"]["computed"] is True
    recorded = repo.view(ModelFishers).fisher(base.commit)
    assert recorded is not None
    assert recorded.object == mask["fisher"]["object"]

    # What changed: at most the kept share of the body (pooler included), and the new head;
    # each changed tensor stored as a delta on the base's tensor of its (unprefixed) name.
    reader = CommitReader(repo, result.commit_ref)
    base_hashes = {n: h for n, h, _ in CommitReader(repo, f"tiny@{base.commit}").tensors()}
    changed, entries, tensor_bytes, changed_raw, kinds = 0, 0, 0, 0, set()
    with load_state_dict(f"tiny@{base.commit}", repo=repo) as before, \
            load_state_dict(result.commit_ref, repo=repo) as after:  # fmt: skip
        for name, raw_hash, tensor in reader.tensors():
            original = base_hashes.get(name.removeprefix("bert."))
            if original == raw_hash:
                continue  # unchanged: stored once, with the base
            record = reader.manifest["stored"][raw_hash]
            tensor_bytes += record["stored_bytes"]
            if original is None:
                assert name.startswith("classifier."), name
                continue
            moved = int((before[name.removeprefix("bert.")] != after[name]).sum())
            changed += moved
            entries += after[name].numel()
            changed_raw += tensor.nbytes
            kinds.add(record["kind"])
            if record["kind"] != "raw":  # a small tensor may be smallest whole
                assert record["base"] == original, name  # a delta on the base's tensor
    assert 0 < changed <= mask["trainable"]
    assert "sparse" in kinds
    assert mask["trainable"] <= 0.005 * sum(t.numel for _, _, t in reader.tensors()) + 1
    assert MASK_FILE not in {f["path"] for f in reader.manifest["files"]}
    weights = base.raw_bytes
    assert tensor_bytes <= 16 * changed + 512 * 8  # the changed entries, not whole tensors
    assert tensor_bytes <= 0.05 * changed_raw
    stored = index.commit(result.commit or "").stored_bytes  # with the header and configs
    assert stored <= 0.05 * weights, (stored, weights)

    # A small upload: the remote has the base, so only the deltas (and the manifest) travel.
    sent = push(repo, "origin", "tiny", branch=result.branch)
    assert sent.commits == 1
    assert 0 < sent.bytes <= 0.1 * first.bytes, (sent.bytes, first.bytes)

    # A second FishMask on the same data reuses the recorded Fisher; replay rebuilds the mask.
    again = finetune(repo, spec(method="sparse", keep="0.5%", lr=1e-2, seed=1))
    assert load_run(repo, again.run).config["mask"]["fisher"]["computed"] is False
    assert len(repo.view(ModelFishers).of_commit(base.commit)) == 1
    assert replay(repo, result.run).identical


def test_fmforge_fisher_on_the_command_line(spam_repo: Repository) -> None:
    from tests.clirunner import fm

    code, output = fm(spam_repo.root, "fisher", "tiny", "--data", "spam:train", "--task",
                      "classification", "--examples", "4", "--json")  # fmt: skip
    assert code == 0, output
    found = json.loads(output)
    assert (found["examples"], found["kind"], found["dataset"]) == (4, "empirical", "spam@v2:train")
    record = spam_repo.view(ModelFishers).fisher(found["commit"])
    assert record is not None
    assert found["object"] == record.object
    code, output = fm(spam_repo.root, "fisher", "tiny", "--data", "spam", "--task",
                      "classification", "--examples", "4", "--kind", "true")  # fmt: skip
    assert code == 0, output
    assert output.startswith("Fisher of tiny@")
    assert "(4 examples, true, 39 tensors)" in output
