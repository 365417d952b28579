"""Policy files: a frozen spec from YAML, with one-line errors naming file, line and column."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from fmforge.access.policy import ACTIONS, ROLES, PolicySpec, load_policy, policy_from_json
from fmforge.errors import InvalidPolicy

FULL = """\
version: 1
compliance:
  pii: deny
  licence: true
  unlearning: "off"
licences:
  my-research-only: [commercial]
resources:
  dataset/youtube:
    licence: CC-BY-NC-4.0
    consent_purposes: [research]
    pii_columns: [author]
    retention_until: 2030-01-01T00:00:00Z
    owner_team: nlp
  model/llama/branch/main:
    protected: true
roles:
  annotator: [list, read_meta, read, label]
rules:
  - id: contractors-no-export
    effect: forbid
    principals: [group:contractors]
    actions: [export]
    resources: ["dataset/*"]
    when: [{attr: context.purpose, op: ne, value: research}]
    unless: [{attr: principal.org, op: eq, ref: resource.owner_team}]
"""


def test_a_full_policy_loads_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(FULL)
    spec = load_policy(path)
    assert spec.compliance.pii == "deny"
    assert spec.compliance.unlearning == "off"
    attrs = spec.resources["dataset/youtube"].values()
    assert attrs["pii_columns"] == ("author",)
    assert attrs["retention_until"] == 1893456000.0
    assert attrs["owner_team"] == "nlp"
    assert spec.role_actions("annotator") == ("list", "read_meta", "read", "label")
    again = policy_from_json(spec.to_json())
    assert again == spec
    assert again.digest() == spec.digest()


def test_the_spec_is_frozen() -> None:
    spec = PolicySpec()
    with pytest.raises(ValueError, match="frozen"):
        spec.version = 1  # type: ignore[misc]


def test_roles_nest_and_admin_holds_everything() -> None:
    order = ["viewer", "user", "editor", "maintainer", "owner"]
    for smaller, larger in itertools.pairwise(order):
        assert set(ROLES[smaller]) < set(ROLES[larger])
    assert set(ROLES["admin"]) == set(ACTIONS)
    assert "read_pii" not in ROLES["maintainer"]
    with pytest.raises(InvalidPolicy, match="unknown role 'superuser'"):
        PolicySpec().role_actions("superuser")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("- a\n- b\n", "a policy is a mapping"),
        ("version: 2\n", "1:10: version Input should be 1"),
        ("colour: red\n", "1:1: colour is not a field here"),
        ("rules: [\n", "not valid YAML"),
        ("rules:\n  - id: r\n    effect: allow\n    actions: [read]\n", "3:13: rules.0.effect"),
        ("rules:\n  - id: r\n    effect: permit\n    actions: [reed]\n", "unknown action 'reed'"),
        ("rules:\n  - id: r\n    effect: permit\n    actions: []\n", "rules.0.actions"),
        ("rules:\n  - id: R!\n    effect: permit\n    actions: [read]\n", "rules.0.id"),
        (
            "rules:\n  - {id: r, effect: permit, actions: [read], resources: ['dataset/x#c']}\n",
            "columns need a version",
        ),
        (
            "rules:\n  - {id: r, effect: permit, actions: [read], principals: [alice]}\n",
            "invalid principal 'alice'",
        ),
        (
            "rules:\n  - {id: r, effect: permit, actions: [read]}\n"
            "  - {id: r, effect: forbid, actions: [read]}\n",
            "rule id 'r' is used twice",
        ),
        (
            "rules:\n  - id: r\n    effect: permit\n    actions: [read]\n"
            "    when: [{attr: principal.org, op: eq}]\n",
            "5:12: rules.0.when.0 op eq takes exactly one of value or ref",
        ),
        (
            "rules:\n  - {id: r, effect: permit, actions: [read], "
            "when: [{attr: user.org, op: exists}]}\n",
            "rules.0.when.0.attr",
        ),
        ("resources:\n  dataset/x:\n    retention_until: 2030-01-01\n", "retention_until"),
        ("resources:\n  dataset/x:\n    retention_until: '2030-01-01T00:00'\n", "time zone"),
        ("resources:\n  'dataset/**/x': {licence: MIT}\n", "may only be the last segment"),
        ("roles:\n  viewer: [read]\n", "role 'viewer' is built in"),
        ("compliance:\n  pii: hide\n", "compliance.pii"),
        ("a: &a [1, 2]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
         "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
         "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
         "g: [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n", "aliases expanded"),
    ],
)  # fmt: skip
def test_mistakes_are_one_line_naming_where(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(InvalidPolicy) as caught:
        load_policy(path)
    line = str(caught.value)
    assert "\n" not in line
    assert line.startswith(str(path)), line
    assert message in line, line


def test_a_missing_file() -> None:
    with pytest.raises(InvalidPolicy, match="No such file"):
        load_policy(Path("/nonexistent/policy.yaml"))
