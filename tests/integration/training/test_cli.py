"""``fmforge finetune``, ``fmforge eval``, and evaluations in ``model show`` / ``model log``."""

from __future__ import annotations

import json

import orjson

from fmforge.repository import Repository
from fmforge.training.spec import FinetuneSpec
from tests.clirunner import fm


def test_finetune_then_eval_from_the_command_line(spam_repo: Repository) -> None:
    root = spam_repo.root
    code, output = fm(
        root, "finetune", "--base", "tiny", "--data", "spam@v2", "--eval-split", "valid",
        "--test-split", "test", "--batch-size", "8", "--threads", "1", "--targets", "query,value",
        "--json",
    )  # fmt: skip
    assert code == 0, output
    result = orjson.loads(output)
    assert result["model"] == "tiny-spam-lora"
    assert result["adapter"] is True
    commit = result["commit"]
    code, output = fm(root, "eval", "tiny-spam-lora", "--data", "spam@v1:test", "--metric",
                      "accuracy", "--metric", "macro_f1")  # fmt: skip
    assert code == 0, output
    assert f"tiny-spam-lora@{commit[:12]} on spam@v1:test (12 rows): accuracy " in output
    code, output = fm(root, "model", "show", "tiny-spam-lora")
    assert code == 0, output
    evaluated = [line for line in output.splitlines() if line.startswith("eval ")]
    assert [line.split(" on ")[1].split(" (")[0] for line in evaluated] == [
        "spam@v2:valid", "spam@v2:test", "spam@v1:test",
    ]  # fmt: skip
    assert f"run {result['run'][-12:]}" in evaluated[0]
    code, output = fm(root, "model", "log", "tiny-spam-lora", "--json")
    (record,) = [json.loads(line) for line in output.splitlines()]
    assert [e["split"] for e in record["evaluations"]] == ["valid", "test", "test"]
    code, output = fm(root, "model", "log", "tiny-spam-lora")
    assert output.count("    eval accuracy") == 3, output
    code, output = fm(root, "runs", "ls", "metrics.eval_accuracy.max >= 0", "--json")
    assert [json.loads(line)["id"] for line in output.splitlines()] == [result["run"]]
    code, output = fm(root, "runs", "ls", "config.finetune.targets ~ query", "--json")
    assert len(output.splitlines()) == 1


def test_resume_without_a_spec_takes_the_runs(spam_repo: Repository) -> None:
    root = spam_repo.root
    code, output = fm(root, "finetune", "--base", "tiny", "--data", "spam", "--threads", "1",
                      "--epochs", "2", "--batch-size", "8", "--json")  # fmt: skip
    assert code == 0, output
    run = orjson.loads(output)["run"]
    code, output = fm(root, "finetune", "--resume", run)
    assert code == 1
    assert "that run finished; nothing to resume" in output


def finetune_options() -> dict[str, str]:
    """option -> help text of every option of `fmforge finetune`."""
    import typer.main

    from fmforge.cli.app import app

    command = typer.main.get_command(app).commands["finetune"]  # type: ignore[attr-defined]
    return {opt: param.help or "" for param in command.params for opt in param.opts}


def test_every_spec_field_is_a_documented_option_of_finetune() -> None:
    from fmforge.cli.train import EXECUTION_OPTIONS
    from fmforge.training.search import SearchSpec

    options = finetune_options()
    fields = {"--" + name.replace("_", "-") for name in FinetuneSpec.model_fields}
    fields |= {"--" + name.replace("_", "-") for name in SearchSpec.model_fields}  # --auto's
    assert fields <= set(options)
    for name in fields:
        assert options[name].strip(), name  # its help is the field's description
    execution = {"--" + n.replace("_", "-") for n in EXECUTION_OPTIONS} - {"--as-json"}
    assert set(options) - fields - {"--help"} == execution | {"--json"}
