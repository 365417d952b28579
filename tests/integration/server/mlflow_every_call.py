"""A training script written the way MLflow users write them, exercising every call of the
fluent API and ``MlflowClient`` that issue 16 lists, and reading every value back.

Run as ``MLFLOW_TRACKING_URI=http://HOST:PORT python mlflow_every_call.py OUT.json``, against
`fmforge ui` (``test_mlflow_parity.py``) or a stock ``mlflow server`` (the same assertions hold
for both: what it checks is MLflow's documented behaviour). Each check is an ``assert`` with the
values in its message; the ids it created are written to OUT.json for the caller's own checks.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

client = MlflowClient()
out: dict[str, Any] = {}
work = Path(tempfile.mkdtemp(prefix="mlflow-every-call-"))
os.chdir(work)  # anything written "into the working directory" would show up here


def refused(code: str, call: Any, *words: str) -> None:
    try:
        call()
    except MlflowException as error:
        assert error.error_code == code, (code, error.error_code, str(error))  # noqa: PT017
        for word in words:
            assert word in str(error), (word, str(error))  # noqa: PT017
        return
    raise AssertionError(f"not refused: expected {code}")


# ---- experiments --------------------------------------------------------------------------

experiment_id = mlflow.set_experiment("parity").experiment_id
other = client.create_experiment("parity-other", tags={"team": "nlp", "stage": "dev"})
got = client.get_experiment(other)
assert got.name == "parity-other", got
assert got.tags == {"team": "nlp", "stage": "dev"}, got.tags
client.set_experiment_tag(other, "stage", "prod")
assert client.get_experiment(other).tags["stage"] == "prod"
client.rename_experiment(other, "parity-renamed")
assert client.get_experiment(other).name == "parity-renamed"
assert client.get_experiment_by_name("parity-renamed").experiment_id == other
assert client.get_experiment_by_name("parity-other") is None
names = {e.name for e in client.search_experiments()}
assert {"parity", "parity-renamed"} <= names, names
found = client.search_experiments(filter_string="name = 'parity-renamed'")
assert [e.experiment_id for e in found] == [other], found
client.delete_experiment(other)
assert client.get_experiment(other).lifecycle_stage == "deleted"
assert "parity-renamed" not in {e.name for e in client.search_experiments()}
client.restore_experiment(other)
assert client.get_experiment(other).lifecycle_stage == "active"
refused("RESOURCE_ALREADY_EXISTS", lambda: client.create_experiment("parity"), "parity")
refused("RESOURCE_DOES_NOT_EXIST", lambda: client.get_experiment("987654"))

# ---- a run through the fluent API ---------------------------------------------------------

X, y = make_classification(n_samples=120, n_features=6, random_state=0)
began = int(time.time() * 1000)
with mlflow.start_run(run_name="parent", tags={"team": "nlp"}) as parent:
    run_id = parent.info.run_id
    mlflow.log_param("lr", 0.01)
    mlflow.log_params({"epochs": 3, "optimizer": "adam", "layers": "12"})
    mlflow.log_param("lr", 0.01)  # the same value again: allowed
    refused("INVALID_PARAMETER_VALUE", lambda: mlflow.log_param("lr", 0.02), "lr")
    mlflow.set_tag("stage", "dev")
    mlflow.set_tags({"owner": "ana", "temp": "x"})
    for step in range(20):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step, timestamp=1_700_000_000_000 + step)
    mlflow.log_metric("train/grad_norm", 2.5, step=3)
    mlflow.log_metric("multi", 1.0, step=7)
    mlflow.log_metric("multi", 2.0, step=7)  # two values at one step: both kept
    mlflow.log_metrics({"acc": 0.93, "f1": 0.8}, step=20)

    # Artifacts: files, folders, text, dicts, figures, images.
    (work / "notes.txt").write_text("hello artifacts\n")
    mlflow.log_artifact(str(work / "notes.txt"))
    mlflow.log_artifact(str(work / "notes.txt"), artifact_path="docs")
    folder = work / "outputs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.csv").write_text("x,y\n1,2\n")
    (folder / "sub" / "b.bin").write_bytes(bytes(range(256)) * 40)
    mlflow.log_artifacts(str(folder), artifact_path="outputs")
    mlflow.log_text("some text\n", "texts/readme.md")
    mlflow.log_dict({"a": 1, "b": [1, 2]}, "config/params.json")
    mlflow.log_dict({"k": "v"}, "config/params.yaml")
    figure, axes = plt.subplots()
    axes.plot([0, 1], [1, 0])
    mlflow.log_figure(figure, "plots/curve.png")
    mlflow.log_image(np.full((8, 8, 3), 200, dtype=np.uint8), "images/grey.png")
    dataset = mlflow.data.from_numpy(X, targets=y, name="synthetic")
    mlflow.log_input(dataset, context="training")

    with mlflow.start_run(run_name="child", nested=True) as child:
        mlflow.log_metric("child_metric", 1.5)
    child_id = child.info.run_id

leftovers = sorted(p.name for p in work.iterdir())
assert leftovers == ["notes.txt", "outputs"], f"files written into the working dir: {leftovers}"

run = mlflow.get_run(run_id)
assert run.info.status == "FINISHED", run.info
assert run.info.run_name == "parent"
assert run.info.user_id, run.info
assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
assert run.info.start_time >= began - 5000
assert run.info.end_time >= run.info.start_time
assert run.data.params == {"lr": "0.01", "epochs": "3", "optimizer": "adam", "layers": "12"}
assert run.data.metrics["acc"] == 0.93
assert run.data.metrics["loss"] == 1.0 / 20
assert run.data.metrics["train/grad_norm"] == 2.5
assert (run.data.tags["team"], run.data.tags["owner"]) == ("nlp", "ana"), run.data.tags
assert run.data.tags["mlflow.runName"] == "parent"
assert run.data.tags.get("mlflow.user"), run.data.tags
assert run.data.tags.get("mlflow.source.name"), run.data.tags
assert [i.dataset.name for i in run.inputs.dataset_inputs] == ["synthetic"], run.inputs
assert run.inputs.dataset_inputs[0].tags[0].value == "training"
history = client.get_metric_history(run_id, "loss")
assert [m.step for m in history] == list(range(20)), history
assert [m.timestamp for m in history] == [1_700_000_000_000 + s for s in range(20)], history
assert [m.value for m in history] == [1.0 / (s + 1) for s in range(20)]
multi = client.get_metric_history(run_id, "multi")
assert sorted((m.step, m.value) for m in multi) == [(7, 1.0), (7, 2.0)], multi
child_run = client.get_run(child_id)
assert child_run.data.tags["mlflow.parentRunId"] == run_id, child_run.data.tags
assert child_run.data.metrics == {"child_metric": 1.5}

# Artifacts read back.
top = sorted((a.path, a.is_dir) for a in client.list_artifacts(run_id))
assert top == [("config", True), ("docs", True), ("images", True), ("notes.txt", False),
               ("outputs", True), ("plots", True), ("texts", True)], top  # fmt: skip
inner = {a.path: a.file_size for a in client.list_artifacts(run_id, "outputs/sub")}
assert inner == {"outputs/sub/b.bin": 256 * 40}, inner
assert mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/config/params.json") == {
    "a": 1, "b": [1, 2]}  # fmt: skip
assert mlflow.artifacts.load_text(f"runs:/{run_id}/texts/readme.md") == "some text\n"
downloaded = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="outputs",
                                                      dst_path=str(work / "dl")))  # fmt: skip
assert (downloaded / "sub" / "b.bin").read_bytes() == bytes(range(256)) * 40
assert (downloaded / "a.csv").read_text() == "x,y\n1,2\n"
local = client.download_artifacts(run_id, "plots/curve.png", str(work / "dl2"))
assert Path(local).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
assert client.download_artifacts(run_id, "docs/notes.txt", str(work / "dl3"))

# ---- the lifecycle: resume, terminate, delete, restore, tags ------------------------------

with mlflow.start_run(run_id=run_id):
    assert mlflow.get_run(run_id).info.status == "RUNNING"
    mlflow.log_metric("resumed", 1.0, step=100)
after = mlflow.get_run(run_id)
assert after.info.status == "FINISHED"
assert after.data.metrics["resumed"] == 1.0
client.delete_tag(run_id, "temp")
assert "temp" not in client.get_run(run_id).data.tags
refused("RESOURCE_DOES_NOT_EXIST", lambda: client.delete_tag(run_id, "never-set"))

made = client.create_run(experiment_id, run_name="by-client", tags={"kind": "client"})
made_id = made.info.run_id
from mlflow.entities import Metric, Param, RunTag  # noqa: E402

now = int(time.time() * 1000)
client.log_batch(made_id, metrics=[Metric("score", 0.5, now, 0), Metric("score", 0.7, now, 1)],
                 params=[Param("depth", "4")], tags=[RunTag("batch", "yes")])  # fmt: skip
client.set_terminated(made_id, status="KILLED")
assert client.get_run(made_id).info.status == "KILLED"
client.delete_run(made_id)
assert client.get_run(made_id).info.lifecycle_stage == "deleted"
ids = [r.info.run_id for r in client.search_runs([experiment_id])]
assert made_id not in ids, ids
deleted = client.search_runs([experiment_id], run_view_type=mlflow.entities.ViewType.DELETED_ONLY)
assert [r.info.run_id for r in deleted] == [made_id], deleted
client.restore_run(made_id)
assert client.get_run(made_id).info.lifecycle_stage == "active"

# ---- search semantics ----------------------------------------------------------------------


def search(text: str, **kw: Any) -> list[str]:
    return [r.info.run_id for r in client.search_runs([experiment_id], filter_string=text, **kw)]


assert search("tags.team = 'nlp'") == [run_id], search("tags.team = 'nlp'")
assert search(f"tags.mlflow.parentRunId = '{run_id}'") == [child_id]
assert search("metrics.`train/grad_norm` > 2") == [run_id]
assert search("attributes.status = 'KILLED'") == [made_id]
assert search("status = 'FINISHED' and params.optimizer = 'adam'") == [run_id]
assert search("metrics.acc > 0.95") == []
by_score = client.search_runs([experiment_id], order_by=["metrics.score DESC"])
assert by_score[0].info.run_id == made_id, [r.info.run_id for r in by_score]
by_name = [
    r.info.run_name
    for r in client.search_runs([experiment_id], order_by=["attributes.run_name ASC"])
]
assert by_name == sorted(by_name), by_name
frame = mlflow.search_runs(experiment_ids=[experiment_id], filter_string="params.lr = '0.01'")
assert (list(frame["run_id"]), frame["metrics.acc"].iloc[0]) == ([run_id], 0.93), frame

# ---- autolog, logged models and the registry ------------------------------------------------

mlflow.sklearn.autolog(log_input_examples=False, log_model_signatures=True)
with mlflow.start_run(run_name="autolog") as auto:
    LogisticRegression(max_iter=200).fit(X, y)
mlflow.sklearn.autolog(disable=True)
auto_run = client.get_run(auto.info.run_id)
assert auto_run.data.params.get("max_iter") == "200", auto_run.data.params
assert "training_accuracy_score" in auto_run.data.metrics, auto_run.data.metrics
models = mlflow.search_logged_models(experiment_ids=[experiment_id], output_format="list")
auto_models = [m for m in models if m.source_run_id == auto.info.run_id]
assert len(auto_models) == 1, models
assert auto_models[0].status.to_proto() == 2 or str(auto_models[0].status).endswith("READY")

with mlflow.start_run(run_name="trained") as trained:
    classifier = LogisticRegression(max_iter=100).fit(X, y)
    info = mlflow.sklearn.log_model(classifier, name="classifier")
    mlflow.log_metric("accuracy", float(classifier.score(X, y)))
logged = mlflow.get_logged_model(info.model_id)
assert (logged.name, logged.source_run_id) == ("classifier", trained.info.run_id), logged
loaded = mlflow.sklearn.load_model(info.model_uri)
assert (loaded.predict(X) == classifier.predict(X)).all()

version = mlflow.register_model(info.model_uri, "parity-classifier", tags={"owner": "ana"})
assert version.version == "1", version
second = mlflow.register_model(f"runs:/{trained.info.run_id}/classifier", "parity-classifier")
assert second.version == "2", second
client.set_registered_model_alias("parity-classifier", "champion", "1")
assert client.get_model_version_by_alias("parity-classifier", "champion").version == "1"
client.set_registered_model_alias("parity-classifier", "champion", "2")  # aliases move
assert client.get_model_version_by_alias("parity-classifier", "champion").version == "2"
champion = mlflow.pyfunc.load_model("models:/parity-classifier@champion")
assert (champion.predict(X) == classifier.predict(X)).all()
by_version = mlflow.sklearn.load_model("models:/parity-classifier/1")
assert (by_version.predict(X) == classifier.predict(X)).all()
client.set_registered_model_tag("parity-classifier", "task", "classification")
client.set_model_version_tag("parity-classifier", "1", "validated", "yes")
client.update_registered_model("parity-classifier", description="a classifier")
registered = client.get_registered_model("parity-classifier")
assert registered.tags == {"task": "classification"}, registered.tags
assert registered.aliases == {"champion": "2"}, registered.aliases
assert registered.description == "a classifier"
first = client.get_model_version("parity-classifier", "1")
assert first.tags == {"owner": "ana", "validated": "yes"}, first.tags
assert (first.run_id, first.status) == (trained.info.run_id, "READY"), first
client.delete_model_version_tag("parity-classifier", "1", "validated")
assert client.get_model_version("parity-classifier", "1").tags == {"owner": "ana"}
client.delete_registered_model_tag("parity-classifier", "task")
assert [m.name for m in client.search_registered_models("name = 'parity-classifier'")] == [
    "parity-classifier"]  # fmt: skip
versions = client.search_model_versions("name = 'parity-classifier'")
assert sorted(v.version for v in versions) == ["1", "2"], versions
client.delete_registered_model_alias("parity-classifier", "champion")
refused(
    "INVALID_PARAMETER_VALUE",  # what MLflow's own server answers for a missing alias
    lambda: client.get_model_version_by_alias("parity-classifier", "champion"),
    "champion",
)
client.delete_model_version("parity-classifier", "1")
assert [v.version for v in client.search_model_versions("name = 'parity-classifier'")] == ["2"]
client.rename_registered_model("parity-classifier", "parity-clf")
assert client.get_registered_model("parity-clf").latest_versions[0].version == "2"
client.delete_registered_model("parity-clf")
refused("RESOURCE_DOES_NOT_EXIST", lambda: client.get_registered_model("parity-clf"))

out.update(
    experiment=experiment_id, run=run_id, child=child_id, made=made_id, auto=auto.info.run_id,
    trained=trained.info.run_id, model_id=info.model_id, nan_ok=not math.isnan(0.0),
)  # fmt: skip
Path(sys.argv[1]).write_text(json.dumps(out))
print("every call worked")
