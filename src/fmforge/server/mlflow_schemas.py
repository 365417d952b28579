"""The bodies of MLflow's REST requests that ``fmforge ui`` serves, as pydantic models.

Each model follows MLflow's request message (``mlflow/protos/service.proto``) and what MLflow's
own server checks (``mlflow/server/handlers.py``, ``mlflow/utils/validation.py``): JSON null is
an absent field, as in protobuf's JSON; int64 fields take integers or decimal strings and must
fit in 64 bits; double fields take numbers or numeric strings (``"NaN"``, ``"Infinity"``);
keys follow MLflow's name rule; unknown fields are ignored, so newer clients keep working.
Sizes are checked against the configured ``Limits`` by each model's ``check``. Every problem
becomes one ``InvalidRequest`` line naming the field (``fmforge.server.errors``).
"""

from __future__ import annotations

import json
import posixpath
import re
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Request
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from fmforge.errors import InvalidRequest
from fmforge.server.errors import CUSTOM_PREFIX, invalid_request, show
from fmforge.server.guards import Limits

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_KEY = re.compile(r"[/\w.\- :]+")  # MLflow's validate_param_and_metric_name, less the empty name
_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")


def _fail(kind: str, message: str, value: object) -> PydanticCustomError:
    return PydanticCustomError(CUSTOM_PREFIX + kind, message + ", got {got}", {"got": show(value)})


def _int64(value: object) -> int:
    if isinstance(value, bool):
        raise _fail("int64", "must be an integer", value)
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)  # 1e3 is what some JSON writers make of 1000
    elif isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        number = int(value)  # protobuf's JSON writes int64 as a string
    else:
        raise _fail("int64", "must be an integer", value)
    if not INT64_MIN <= number <= INT64_MAX:
        raise _fail("int64", "must fit in 64 bits (-2**63 to 2**63-1)", value)
    return number


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _fail("number", "must be a number", value)
    if isinstance(value, str) and len(value) > 100:
        raise _fail("number", "must be a number", value)
    try:
        return float(value)
    except ValueError:
        raise _fail("number", "must be a number", value) from None
    except OverflowError:  # an integer beyond any float
        raise _fail("number", "must be a number a float can hold", value) from None


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise _fail("string", "must be a string", value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail("string", "must be valid Unicode text (no lone surrogates)", value) from None
    return value


def _key(value: object) -> str:
    text = _text(value)
    if not _KEY.fullmatch(text):
        raise _fail(
            "key", "must be a name of letters, digits, '_', '-', '.', ' ', ':' and '/'", value
        )
    if posixpath.normpath(text) != text:
        raise _fail("key", "must be a name that a path would not change", value)
    return text


Int64 = Annotated[int, PlainValidator(_int64)]
Number = Annotated[float, PlainValidator(_number)]
Text = Annotated[str, PlainValidator(_text)]
Key = Annotated[str, PlainValidator(_key)]


def _within(limits: Limits, field: str, value: str | None, limit: str) -> None:
    if value is not None and len(value) > getattr(limits, limit):
        raise InvalidRequest(
            f"field {field!r} has {len(value)} characters; the limit is "
            f"{getattr(limits, limit)} (setting server.{limit})"
        )


class Body(BaseModel):
    """A request body: JSON null is an absent field; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = {key: value for key, value in data.items() if value is not None}
            if "run_id" in cls.model_fields and "run_id" not in data and "run_uuid" in data:
                data["run_id"] = data["run_uuid"]  # MLflow's older name for it
        return data

    def check(self, limits: Limits) -> None:
        """Sizes within ``limits``; the default has nothing to check."""


class Tag(Body):
    key: Key
    value: Text

    def check(self, limits: Limits, at: str = "") -> None:
        _within(limits, f"{at}key", self.key, "max_key_chars")
        _within(limits, f"{at}value", self.value, "max_tag_value_chars")


class Param(Body):
    key: Key
    value: Text

    def check(self, limits: Limits, at: str = "") -> None:
        _within(limits, f"{at}key", self.key, "max_key_chars")
        _within(limits, f"{at}value", self.value, "max_param_value_chars")


class Metric(Body):
    key: Key
    value: Number
    timestamp: Int64
    step: Int64 = 0

    def check(self, limits: Limits, at: str = "") -> None:
        _within(limits, f"{at}key", self.key, "max_key_chars")


class CreateExperiment(Body):
    name: Text
    artifact_location: Text | None = None
    tags: list[Tag] = []

    def check(self, limits: Limits) -> None:
        if not self.name.strip():
            raise InvalidRequest("field 'name' must not be empty: an experiment needs a name")
        _within(limits, "name", self.name, "max_experiment_name_chars")
        for i, tag in enumerate(self.tags):
            tag.check(limits, f"tags[{i}].")


class CreateRun(Body):
    experiment_id: Text = "0"
    run_name: Text | None = None
    start_time: Int64 | None = None
    user_id: Text | None = None
    tags: list[Tag] = []

    def check(self, limits: Limits) -> None:
        _within(limits, "run_name", self.run_name, "max_tag_value_chars")
        _check_batch(limits, "tags", self.tags, "max_params_tags_per_batch")


class UpdateRun(Body):
    run_id: Text
    status: Literal["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"] | None = None
    end_time: Int64 | None = None
    run_name: Text | None = None

    def check(self, limits: Limits) -> None:
        _within(limits, "run_name", self.run_name, "max_tag_value_chars")


class LogMetric(Metric):
    run_id: Text


class LogParam(Param):
    run_id: Text


class SetTag(Tag):
    run_id: Text


class LogBatch(Body):
    run_id: Text
    metrics: list[Metric] = []
    params: list[Param] = []
    tags: list[Tag] = []

    def check(self, limits: Limits) -> None:
        _check_batch(limits, "metrics", self.metrics, "max_metrics_per_batch")
        _check_batch(limits, "params", self.params, "max_params_tags_per_batch")
        _check_batch(limits, "tags", self.tags, "max_params_tags_per_batch")


class SearchRuns(Body):
    experiment_ids: list[Text] = []
    filter: Text | None = None
    max_results: Int64 = 1000
    order_by: list[Text] = []
    page_token: Text | None = None
    run_view_type: Text | Int64 | None = None

    def check(self, limits: Limits) -> None:
        _max_results(self.max_results)


def _max_results(value: int, most: int = 50_000) -> None:
    if not 1 <= value <= most:
        raise InvalidRequest(f"field 'max_results' must be between 1 and {most}, got {value}")


class SearchExperiments(Body):
    filter: Text | None = None
    max_results: Int64 = 1000
    order_by: list[Text] = []
    page_token: Text | None = None
    view_type: Text | Int64 | None = None

    def check(self, limits: Limits) -> None:
        _max_results(self.max_results)


class ExperimentId(Body):
    experiment_id: Text


class UpdateExperiment(ExperimentId):
    new_name: Text

    def check(self, limits: Limits) -> None:
        if not self.new_name.strip():
            raise InvalidRequest("field 'new_name' must not be empty: an experiment needs a name")
        _within(limits, "new_name", self.new_name, "max_experiment_name_chars")


class SetExperimentTag(ExperimentId):
    key: Key
    value: Text

    def check(self, limits: Limits) -> None:
        _within(limits, "key", self.key, "max_key_chars")
        _within(limits, "value", self.value, "max_tag_value_chars")


class DeleteExperimentTag(ExperimentId):
    key: Key


class RunId(Body):
    run_id: Text


class DeleteTag(RunId):
    key: Key


class Dataset(Body):
    name: Text
    digest: Text
    source_type: Text = ""
    source: Text = ""
    schema_: Text | None = Field(default=None, alias="schema")
    profile: Text | None = None

    @property
    def schema(self) -> str | None:  # type: ignore[override]
        return self.schema_


class DatasetInput(Body):
    tags: list[Tag] = []
    dataset: Dataset


class ModelRef(Body):
    model_id: Text
    step: Int64 | None = None


class LogInputs(RunId):
    datasets: list[DatasetInput] = []
    models: list[ModelRef] = []


class LogOutputs(RunId):
    models: list[ModelRef] = []


# ---- logged models and the model registry ---------------------------------------------------


class CreateLoggedModel(Body):
    experiment_id: Text
    name: Text = "model"
    model_type: Text | None = None
    source_run_id: Text | None = None
    params: list[Param] = []
    tags: list[Tag] = []

    def check(self, limits: Limits) -> None:
        _within(limits, "name", self.name, "max_experiment_name_chars")
        _check_batch(limits, "params", self.params, "max_params_tags_per_batch")
        _check_batch(limits, "tags", self.tags, "max_params_tags_per_batch")


class FinalizeLoggedModel(Body):
    status: Text


class LoggedModelTags(Body):
    tags: list[Tag] = []

    def check(self, limits: Limits) -> None:
        _check_batch(limits, "tags", self.tags, "max_params_tags_per_batch")


class LoggedModelParams(Body):
    params: list[Param] = []

    def check(self, limits: Limits) -> None:
        _check_batch(limits, "params", self.params, "max_params_tags_per_batch")


class SearchLoggedModels(Body):
    experiment_ids: list[Text] = []
    filter: Text | None = None
    max_results: Int64 = 100
    order_by: list[dict[str, Any]] = []
    page_token: Text | None = None

    def check(self, limits: Limits) -> None:
        _max_results(self.max_results)


class RegisteredName(Body):
    name: Text


class CreateRegisteredModel(RegisteredName):
    tags: list[Tag] = []
    description: Text = ""

    def check(self, limits: Limits) -> None:
        _within(limits, "description", self.description, "max_tag_value_chars")
        _check_batch(limits, "tags", self.tags, "max_params_tags_per_batch")


class RenameRegisteredModel(RegisteredName):
    new_name: Text


class DescribeRegisteredModel(RegisteredName):
    description: Text = ""

    def check(self, limits: Limits) -> None:
        _within(limits, "description", self.description, "max_tag_value_chars")


class RegisteredModelTag(RegisteredName):
    key: Key
    value: Text = ""

    def check(self, limits: Limits) -> None:
        _within(limits, "key", self.key, "max_key_chars")
        _within(limits, "value", self.value, "max_tag_value_chars")


class Alias(RegisteredName):
    alias: Text
    version: Text = ""


class CreateModelVersion(RegisteredName):
    source: Text
    run_id: Text | None = None
    tags: list[Tag] = []
    run_link: Text | None = None
    description: Text = ""
    model_id: Text | None = None

    def check(self, limits: Limits) -> None:
        _within(limits, "description", self.description, "max_tag_value_chars")
        _check_batch(limits, "tags", self.tags, "max_params_tags_per_batch")


class VersionRef(RegisteredName):
    version: Text


class DescribeVersion(VersionRef):
    description: Text = ""

    def check(self, limits: Limits) -> None:
        _within(limits, "description", self.description, "max_tag_value_chars")


class VersionTag(VersionRef):
    key: Key
    value: Text = ""

    def check(self, limits: Limits) -> None:
        _within(limits, "key", self.key, "max_key_chars")
        _within(limits, "value", self.value, "max_tag_value_chars")


class SearchRegistry(Body):
    filter: Text | None = None
    max_results: Int64 = 100
    order_by: list[Text] = []
    page_token: Text | None = None

    def check(self, limits: Limits) -> None:
        _max_results(self.max_results)


class LatestVersions(RegisteredName):
    stages: list[Text] = []


def _check_batch(limits: Limits, field: str, items: list[Any], limit: str) -> None:
    most = getattr(limits, limit)
    if len(items) > most:
        raise InvalidRequest(
            f"field {field!r} has {len(items)} entries; the limit is {most} (setting "
            f"server.{limit})"
        )
    for i, item in enumerate(items):
        item.check(limits, f"{field}[{i}].")


M = TypeVar("M", bound=Body)


def parse(raw: bytes, model: type[M], limits: Limits) -> M:
    """``raw`` (a request body) as ``model``, or one ``InvalidRequest`` line."""
    if not raw.strip():
        data: Any = {}  # as MLflow's server: an empty body is an empty message
    else:
        try:
            data = json.loads(raw)
        except RecursionError:
            raise InvalidRequest("the request body is JSON nested too deeply") from None
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"the request body is not UTF-8 text: {exc.reason}") from None
        except json.JSONDecodeError as exc:
            raise InvalidRequest(
                f"the request body is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
            ) from None
        except ValueError as exc:  # e.g. an integer of more digits than Python converts
            raise InvalidRequest(f"the request body is not JSON fmforge can read: {exc}") from None
    if not isinstance(data, dict):
        kind = {"list": "an array", "str": "a string"}.get(type(data).__name__, show(data))
        raise InvalidRequest(f"the request body must be a JSON object, got {kind}")
    try:
        body = model.model_validate(data)
    except ValidationError as exc:
        raise invalid_request(exc.errors()) from None
    body.check(limits)
    return body


async def read(request: Request, model: type[M], limits: Limits) -> M:
    return parse(await request.body(), model, limits)
