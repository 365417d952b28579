"""Values from data, names and messages print as typed: never read as rich markup or emoji.

Each hostile value is stored where users put text (a dataset column name and cell, a commit
message and author, a tensor name, a run name, a metric name, a config key and value, an LF name,
a cleaning rule, a remote's path, an event's payload), then every command that prints it must
show it literally, without crashing and without changing the repository. Refusals naming such a
value keep it literal too.
"""

from __future__ import annotations

import json
import textwrap
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fmforge.cli import context
from fmforge.cli.app import app
from fmforge.data import add_dataset
from fmforge.models import commit_tensors
from fmforge.repository import Repository
from fmforge.tracking import start_run
from tests.hostile.harness import cli_refused, unchanged

HOSTILE = [
    "[red]x[/red]",
    "[/bold] broken",
    "[link=file:///etc/passwd]x[/link]",
    "click [here] for [red]free[/red] stuff",
    ":warning: [bold]",
]
runner = CliRunner()


@dataclass(frozen=True)
class Stored:
    root: Path
    value: str
    lfs: Path
    rules: Path


def _csv(path: Path, column: str, rows: list[tuple[int, str, str]]) -> Path:
    def quoted(text: str) -> str:
        return '"' + text.replace('"', '""') + '"'

    lines = [f"id,{quoted(column)},text"]
    lines += [f"{i},{quoted(a)},{quoted(b)}" for i, a, b in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module", params=range(len(HOSTILE)), ids=lambda i: f"value{i}")
def stored(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stored:
    """One repository holding the hostile value everywhere users put text."""
    value = HOSTILE[request.param]
    root = tmp_path_factory.mktemp("hostile-output")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FMFORGE_USER", value)
        with Repository.init(root) as repo:
            rows = [(1, value, f"hello {value}"), (2, "b", "plain text")]
            add_dataset(repo, "people", _csv(root / "v1.csv", value, rows), message=value)
            rows[1] = (2, f"changed {value}", "plain text")
            add_dataset(repo, "people", _csv(root / "v2.csv", value, rows), message="second")
            weights = {value: np.arange(8, dtype=np.float32), "plain": np.zeros(4, np.float32)}
            commit_tensors(repo, "m", weights, message=value)
            weights[value] = weights[value] + 1
            commit_tensors(repo, "m", weights, message="second")
            for name in (value, "plain"):
                config = {value: value, "lr": 0.1 if name == "plain" else 0.2}
                with start_run(
                    "p", repo=repo, name=name, config=config, system_interval=None
                ) as run:
                    for step in range(5):
                        run.log({value: float(step), "loss": 1.0 / (step + 1)}, step=step)
    lfs = root / "lfs.yaml"
    lfs.write_text(
        "labels: [ham, spam]\ncolumn: text\nlfs:\n"
        f"  - name: {json.dumps(value)}\n    keywords: [hello]\n    label: spam\n"
    )
    rules = root / "rules.yaml"
    rules.write_text(f"column: text\nrules:\n  - drop: {{keywords: [{json.dumps(value)}]}}\n")
    remote = root / "remotes" / value.replace("/", "_")
    remote.mkdir(parents=True)
    with Repository.init(remote):
        pass
    result = runner.invoke(app, ["--store", str(root), "remote", "add", "origin", str(remote)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        ["--store", str(root), "events", "append", "outside/x", "Noted",
         "--data", json.dumps({"v": value})],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return Stored(root, value, lfs, rules)


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables fit the console's width: wide enough that no cell is folded or cut."""
    monkeypatch.setattr(context.console, "_width", 400)


def shown(root: Path, *args: str, writes: bool = False) -> str:
    """The output of a command that must succeed and (unless it ``writes``) change nothing."""
    with nullcontext() if writes else unchanged(root):
        result = runner.invoke(app, ["--store", str(root), *args])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"{args}: {type(result.exception).__name__}") from (
                result.exception
            )
        assert result.exit_code == 0, result.output
    return result.output


# These record the label matrix they compute (LabelMatrixBuilt): not read-only.
WRITERS = {"label apply", "label analyze"}


COMMANDS = {
    "data show": (["data", "show", "people@v1"], "{v}"),
    "data show cell": (["data", "show", "people@v1"], "hello {v}"),
    "data log": (["data", "log", "people"], "{v}"),
    "data diff": (["data", "diff", "people@v1", "people@v2", "--key", "id"], "{v}: 1 rows"),
    "data clean": (["data", "clean", "people", "--rules", "{rules}"], "{v}"),
    "model log": (["model", "log", "m@main"], "{v}"),
    "model log author": (["model", "log", "m@main"], "{v}  "),
    "model log graph": (["model", "log", "m", "--graph"], "{v}"),
    "model show": (["model", "show", "m@main~1"], "{v}"),
    "model diff": (["model", "diff", "m@main~1", "main"], "changed   {v} F32"),
    "runs ls": (["runs", "ls"], "{v}"),
    "runs ls metric column": (["runs", "ls", "--metric", "{v}"], "{v} (last)"),
    "runs show": (["runs", "show", "{v}"], "{v}  "),
    "runs show config": (["runs", "show", "{v}"], "  {v} = '{v}'"),
    "runs show metric": (["runs", "show", "{v}"], "{v}"),
    "runs compare": (["runs", "compare", "{v}", "plain"], "{v} last / min / max"),
    "label apply": (["label", "apply", "people", "--lfs", "{lfs}", "--workers", "1"], "{v}"),
    "label analyze": (["label", "analyze", "people", "--lfs", "{lfs}", "--gold", "id"], "{v}"),
    "remote ls": (["remote", "ls"], "{v_path}"),
    "log": (["log", "--stream", "outside/"], "{v_json}"),
}


@pytest.mark.parametrize("command", COMMANDS)
def test_stored_values_print_literally(stored: Stored, command: str) -> None:
    args, expected = COMMANDS[command]
    fields = {
        "v": stored.value, "lfs": str(stored.lfs), "rules": str(stored.rules),
        "v_path": stored.value.replace("/", "_"),
        "v_json": json.dumps({"v": stored.value}, separators=(",", ":")),
    }  # fmt: skip
    out = shown(stored.root, *(a.format(**fields) for a in args), writes=command in WRITERS)
    assert expected.format(**fields) in out, out


def test_the_label_check_names_a_stale_lf_literally(stored: Stored, tmp_path: Path) -> None:
    """`label check` prints the LF whose votes changed (in red), its name as typed."""
    template = textwrap.dedent("""
        from fmforge.data.labeling import labeling_function
        WORD = {word!r}

        @labeling_function({name!r}, labels=["ham", "spam"])
        def vote(row):
            return "spam" if WORD in row["text"] else None
    """)
    lfs = tmp_path / "lfs.py"
    lfs.write_text(template.format(word="hello", name=stored.value))
    shown(stored.root, "label", "apply", "people", "--lfs", str(lfs), "--workers", "1",
          writes=True)  # fmt: skip
    lfs.write_text(template.format(word="plain", name=stored.value))  # same source, new votes
    with unchanged(stored.root):
        result = runner.invoke(
            app, ["--store", str(stored.root), "label", "check", "people", "--lfs", str(lfs)]
        )
    assert result.exit_code == 1, result.output
    assert f"{stored.value}: 2 sampled rows vote differently" in result.output


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize(
    "args",
    [
        ["data", "show", "people@{v}"],
        ["data", "log", "{v}"],
        ["model", "log", "m@{v}"],
        ["model", "show", "{v}@main"],
        ["runs", "show", "{v}-missing"],
        ["remote", "remove", "{v}"],
    ],
    ids=["dataset ref", "dataset name", "model ref", "model name", "run", "remote"],
)
def test_refusals_name_the_value_literally(tmp_path: Path, value: str, args: list[str]) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    with Repository.init(root) as repo:
        add_dataset(repo, "people", _csv(tmp_path / "v1.csv", "name", [(1, "a", "b")]))
        commit_tensors(repo, "m", {"w": np.zeros(2, np.float32)}, message="one")
    line = cli_refused(root, *(a.format(v=value) for a in args))
    assert value.split()[0] in line, line


@pytest.mark.parametrize("value", HOSTILE)
def test_model_commit_prints_its_header_and_message(tmp_path: Path, value: str) -> None:
    """`model commit` prints `[NAME BRANCH ID] MESSAGE`: the id and the message as typed."""
    root = tmp_path / "repo"
    root.mkdir()
    Repository.init(root).close()
    weights = tmp_path / "w"
    weights.mkdir()
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(4, np.float32)}, str(weights / "model.safetensors"))
    result = runner.invoke(
        app, ["--store", str(root), "model", "commit", "m", str(weights), "-m", value]
    )
    assert result.exit_code == 0, result.output
    with Repository.open(root) as repo:
        from fmforge.models import ModelRefs

        head = repo.view(ModelRefs).branches("m")["main"]
    assert f"[m main {head[:12]}] {value}" in result.output


@pytest.mark.parametrize("value", HOSTILE)
def test_forget_prints_the_reason_literally(tmp_path: Path, value: str) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    with Repository.init(root) as repo:
        add_dataset(
            repo, "people", _csv(tmp_path / "v1.csv", "name", [(1, "a", "b"), (2, "c", "d")])
        )
    result = runner.invoke(
        app, ["--store", str(root), "data", "forget", "people", "--where", "id = 1",
              "--reason", value],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"1 rows forgotten ({value})" in result.output


def test_settings_print_literally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`config` shows each setting's value, as given in the environment."""
    Repository.init(tmp_path).close()
    monkeypatch.setenv("FMFORGE_USER", HOSTILE[2])
    out = shown(tmp_path, "config")
    assert repr(HOSTILE[2]) in out


def test_styled_pieces_stay_literal() -> None:
    """What the CLI styles (headings, warnings) is built from literal pieces, not markup."""
    line = context.text(("[/bold] 1.", "bold"), " ", HOSTILE[2])
    assert line.plain == "[/bold] 1. " + HOSTILE[2]
