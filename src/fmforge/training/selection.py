"""``fmforge model select``: rank candidate models for a labelled task on frozen features.

    chosen = select_model(repo, "sms@v1", split="train")   # every compatible model
    chosen.pick, chosen.kendall_tau, chosen.candidates     # LogME's best, the agreement, scores

Each candidate (a commit: a base, a full finetune, an adapter merged into its base, a merge)
embeds up to ``examples`` rows of the split (a seeded sample; the labels a finetune would train
on: the label model's most probable class where the data has one, else the gold label) as the
mean of its last hidden states over each row's tokens, its own tokenizer, ``max_length``
tokens, in eval mode. The features are scored by LogME (``fmforge.training.transferability``)
and, as a cross-check, by a ``folds``-fold linear probe; the candidates are ranked by each and
the rankings compared by Kendall's tau. LogME's best is the pick (the probe breaks ties).

Default candidates: the head of every branch of every model (``runs/`` checkpoint branches
left out), each commit once; those transformers cannot load as a text encoder or language model
(no config, no tokenizer) are skipped and listed. Candidates named with ``candidates`` must
load. Recorded as ``ModelSelected`` on ``selection/<id>`` (``fmforge.training.events``).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fmforge.access import targets
from fmforge.access.mediation import mediated
from fmforge.errors import FmforgeError, InvalidSpec, ModelNotFound
from fmforge.models.checkout import CommitReader, open_model
from fmforge.models.refs import ModelRefs, split_model_ref
from fmforge.repository import Repository
from fmforge.training.events import ModelSelected
from fmforge.training.transferability import kendall_tau, logme, probe_accuracy

DEFAULT_EXAMPLES = 512


@dataclass(frozen=True)
class Candidate:
    model: str  # NAME@COMMIT
    logme: float
    probe: float
    features: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "logme": self.logme, "probe": self.probe,
                "features": self.features, "seconds": round(self.seconds, 3)}  # fmt: skip


@dataclass
class Selection:
    selection: str
    dataset: str
    dataset_version: str
    examples: int
    folds: int
    candidates: list[Candidate]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (NAME@COMMIT, why)
    seconds: float = 0.0

    @property
    def logme_ranking(self) -> list[str]:
        return [c.model for c in sorted(self.candidates, key=lambda c: (-c.logme, -c.probe))]

    @property
    def probe_ranking(self) -> list[str]:
        return [c.model for c in sorted(self.candidates, key=lambda c: (-c.probe, -c.logme))]

    @property
    def kendall_tau(self) -> float | None:
        return kendall_tau([c.logme for c in self.candidates], [c.probe for c in self.candidates])

    @property
    def pick(self) -> str:
        return self.logme_ranking[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "selection": self.selection, "dataset": self.dataset,
            "dataset_version": self.dataset_version, "examples": self.examples,
            "candidates": [c.to_json() for c in self.candidates],
            "logme_ranking": self.logme_ranking, "probe_ranking": self.probe_ranking,
            "kendall_tau": self.kendall_tau, "pick": self.pick, "folds": self.folds,
            "seconds": round(self.seconds, 3),
        }  # fmt: skip


def _select_needs(repo: Repository, args: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Use of the data, and of each candidate named (by default, every model it may read)."""
    needs = [("use", targets.dataset_resource(repo, args["data"]))]
    needs += [("use", targets.model_resource(repo, c)) for c in args.get("candidates") or ()]
    return needs


@mediated("use", _select_needs)
def select_model(
    repo: Repository,
    data: str,
    *,
    candidates: Sequence[str] | None = None,
    split: str | None = None,
    examples: int = DEFAULT_EXAMPLES,
    folds: int = 5,
    seed: int = 0,
    max_length: int = 128,
    text_column: str = "text",
    label_column: str = "label",
    batch_size: int = 32,
    threads: int | None = None,
    record: bool = True,
) -> Selection:
    """Rank ``candidates`` (NAME@REF; default: every compatible model) for the labelled rows
    of ``data`` (DATASET@REF, its ``split``); see the module docstring. Refused with
    ``InvalidSpec``, nothing recorded, when the inputs do not fit."""
    import torch

    if examples < 2:
        raise InvalidSpec(f"--examples {examples}: at least 2")
    if not 2 <= folds <= 100:
        raise InvalidSpec(f"--folds {folds}: between 2 and 100")
    started = time.perf_counter()
    version, texts, labels = _rows(repo, data, split, examples, seed, text_column, label_column)
    explicit = candidates is not None
    targets = _targets(repo, candidates)
    if not targets:
        raise InvalidSpec("no candidate models: commit one, or name them with --candidates")
    if explicit and len(targets) < 2:
        raise InvalidSpec("--candidates: name at least two models to rank")
    scored, skipped = [], []
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads or threads_before)
    try:
        for target in targets:
            began = time.perf_counter()
            try:
                features = embed(repo, target, texts, max_length=max_length,
                                 batch_size=batch_size)  # fmt: skip
            except (InvalidSpec, OSError, ValueError, KeyError, RuntimeError) as exc:
                if explicit:
                    why = _first_line(exc)
                    raise InvalidSpec(f"--candidates {_short(target)}: {why}") from None
                skipped.append((target, _first_line(exc)))
                continue
            score = logme(features, labels)
            probe = probe_accuracy(features, labels, folds=folds, seed=seed)
            scored.append(Candidate(target, score, probe, int(features.shape[1]),
                                    time.perf_counter() - began))  # fmt: skip
    finally:
        torch.set_num_threads(threads_before)
    if not scored:
        reasons = "; ".join(f"{_short(t)}: {w}" for t, w in skipped)
        raise InvalidSpec(f"no candidate could embed the text: {reasons}")
    dataset = version.ref + (f":{split}" if split else "")
    result = Selection(secrets.token_hex(8), dataset, version.id, len(labels), folds, scored,
                       skipped, time.perf_counter() - started)  # fmt: skip
    if record:
        payload = result.to_json()
        if skipped:
            payload["skipped"] = [f"{_short(t)}: {why}" for t, why in skipped]
        repo.record(f"selection/{result.selection}", ModelSelected(payload))  # type: ignore[arg-type]
    return result


def _rows(
    repo: Repository, data: str, split: str | None, examples: int, seed: int, text_column: str,
    label_column: str,
) -> tuple[Any, list[str], np.ndarray[Any, Any]]:  # fmt: skip
    """(version, texts, class indices) of a seeded sample of the split's labelled rows."""
    from fmforge.training.data import load_training_data
    from fmforge.training.spec import FinetuneSpec

    try:
        spec = FinetuneSpec.parse({
            "base": "-", "data": data, "method": "full", "train_split": split,
            "text_column": text_column, "label_column": label_column, "soft_labels": True,
        })  # fmt: skip
        training = load_training_data(repo, spec)
    except InvalidSpec as exc:
        text = str(exc).replace("finetune spec: ", "").replace("--train-split", "--data ...:")
        raise InvalidSpec(text) from None
    rows = training.train
    assert rows.targets is not None
    labels = np.argmax(rows.targets, axis=1)
    order = np.random.default_rng(seed).permutation(len(rows))[:examples]
    order.sort()
    if len(np.unique(labels[order])) < 2:
        raise InvalidSpec(f"{training.version.ref}: the rows sampled hold one class only")
    return training.version, [rows.texts[i] for i in order], labels[order]


def _targets(repo: Repository, candidates: Sequence[str] | None) -> list[str]:
    """NAME@COMMIT of every candidate, each commit once."""
    index = repo.view(ModelRefs)
    out: list[str] = []
    if candidates is not None:
        for text in candidates:
            try:
                name, ref = split_model_ref(text)
                out.append(f"{name}@{index.resolve(name, ref)}")
            except (ModelNotFound, FmforgeError) as exc:
                raise InvalidSpec(f"--candidates {text}: {_first_line(exc)}") from None
    else:
        for name in index.models():
            for branch, commit in sorted(index.branches(name).items()):
                if not branch.startswith("runs/"):
                    out.append(f"{name}@{commit}")
    seen: set[str] = set()
    unique = []
    for target in out:
        commit = target.partition("@")[2]
        if commit not in seen:
            seen.add(commit)
            unique.append(target)
    return unique


def embed(
    repo: Repository, target: str, texts: Sequence[str], *, max_length: int = 128,
    batch_size: int = 32,
) -> np.ndarray[Any, Any]:  # fmt: skip
    """(rows, hidden) float64 mean-pooled last hidden states of commit ``target``'s body."""
    import torch

    body, tokenizer = load_body(repo, target)
    limit = getattr(body.config, "max_position_embeddings", None)
    length = min(max_length, limit) if isinstance(limit, int) and limit > 0 else max_length
    from fmforge.training.modeling import collate, encode

    encoded = encode(tokenizer, list(texts), length)
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), i))  # less padding
    out = np.zeros((len(encoded), int(body.config.hidden_size)), dtype=np.float64)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = collate(tokenizer, [encoded[i] or [tokenizer.pad_token_id] for i in rows])
            hidden = body(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out[rows] = pooled.double().numpy()
    if not np.isfinite(out).all():
        raise InvalidSpec("its features hold NaN or infinite values")
    return out


def load_body(repo: Repository, target: str) -> tuple[Any, Any]:
    """(the commit's body in eval mode, its tokenizer): an adapter merged into its base."""
    import transformers

    from fmforge.training.modeling import load_tokenizer, quiet

    commit = target.partition("@")[2]
    directory = open_model(target, repo=repo)
    adapter = CommitReader(repo, target).manifest.get("adapter")
    if adapter is None:
        _require_config(directory)
        tokenizer = load_tokenizer(directory, "classification")
        with quiet():
            body = transformers.AutoModel.from_pretrained(directory)
        return body.eval(), tokenizer
    base = repo.view(ModelRefs).commit(commit).base
    if not base:
        raise InvalidSpec("an adapter with no recorded base")
    base_dir = open_model(base, repo=repo)
    _require_config(base_dir)
    from fmforge.training.evaluation import task_of
    from fmforge.training.modeling import load_for_inference

    model, tokenizer = load_for_inference(directory, task_of(directory, target), base_dir)
    merged = model.merge_and_unload()
    prefix = getattr(merged, "base_model_prefix", "")
    body = getattr(merged, prefix, merged) if prefix else merged
    return body.eval(), tokenizer


def _require_config(directory: Path) -> None:
    if not (directory / "config.json").is_file():
        raise InvalidSpec("no config.json: not a transformers model")


def _short(target: str) -> str:
    name, _, commit = target.partition("@")
    return f"{name}@{commit[:12]}" if len(commit) == 64 else target


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())[:300]
