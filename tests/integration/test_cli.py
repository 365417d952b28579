"""The CLI through its runner, and the installed entry point as a user runs it."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fmforge.cli.app import app
from fmforge.repository import Repository

runner = CliRunner()


def fm(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> tuple[int, str]:
    import os

    previous = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        result = runner.invoke(app, list(args), env=env)
    finally:
        os.chdir(previous)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.fixture
def project(tmp_path: Path) -> Path:
    code, out = fm("init", str(tmp_path))
    assert code == 0, out
    return tmp_path


class TestRepositoryCommands:
    def test_init_then_discover_from_a_subdirectory(self, project: Path) -> None:
        sub = project / "a" / "b"
        sub.mkdir(parents=True)
        code, out = fm("events", "append", "notes/x", "NoteTaken", "--data", '{"t": 1}', cwd=sub)
        assert code == 0
        assert "seq 2" in out
        code, out = fm("log", "--json", "--reverse", cwd=sub)
        records = [json.loads(line) for line in out.splitlines()]
        assert [r["type"] for r in records] == ["RepositoryInitialized", "NoteTaken"]
        assert records[1]["data"] == {"t": 1}
        assert records[1]["meta"]["actor"] == "tester@fmforge"

    def test_store_option_and_environment_variable(self, project: Path, tmp_path: Path) -> None:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        code, _ = fm("--store", str(project), "events", "append", "s", "A", cwd=elsewhere)
        assert code == 0
        code, out = fm("log", cwd=elsewhere, env={"FMFORGE_STORE": str(project)})
        assert code == 0
        assert "A" in out
        assert "2 event(s)" in out

    def test_init_twice_is_refused(self, project: Path) -> None:
        code, out = fm("init", str(project))
        assert code == 1
        assert "already exists" in out

    def test_log_filters(self, project: Path) -> None:
        for stream, etype in [("notes/a", "NoteTaken"), ("data/b", "DatasetAdded"),
                              ("notes/c", "NoteAmended")]:  # fmt: skip
            code, _ = fm("--store", str(project), "events", "append", stream, etype)
            assert code == 0
        _, out = fm("--store", str(project), "log", "--json", "--reverse", "--stream", "notes/")
        assert [json.loads(x)["stream"] for x in out.splitlines()] == ["notes/a", "notes/c"]
        _, out = fm("--store", str(project), "log", "--json", "-t", "DatasetAdded")
        assert [json.loads(x)["seq"] for x in out.splitlines()] == [3]
        _, out = fm("--store", str(project), "log", "--json", "--since", "2999-01-01")
        assert out == ""
        _, out = fm("--store", str(project), "log", "--json", "-n", "2")
        assert [json.loads(x)["seq"] for x in out.splitlines()] == [4, 3]  # the newest, as git
        _, out = fm("--store", str(project), "log", "--json", "-n", "2", "--reverse")
        assert [json.loads(x)["seq"] for x in out.splitlines()] == [3, 4]

    def test_expected_version_and_idempotency_from_the_cli(self, project: Path) -> None:
        args = ["--store", str(project), "events", "append", "s", "A", "--expected-version", "0"]
        event_id = "01935a4c-0000-7000-8000-000000000001"
        code, _ = fm(*args, "--event-id", event_id)
        assert code == 0
        code, out = fm(*args, "--event-id", event_id)
        assert code == 0
        assert "already recorded" in out
        code, out = fm(*args)
        assert code == 1
        assert "is at version 1, expected 0" in out

    def test_bad_json_data_is_one_line(self, project: Path) -> None:
        code, out = fm("--store", str(project), "events", "append", "s", "A", "--data", "{oops")
        assert code == 1
        assert out.startswith("fmforge: error: --data is not valid JSON")

    def test_export_import_into_a_fresh_store_reproduces_the_chain(
        self, project: Path, tmp_path: Path
    ) -> None:
        for n in range(20):
            fm("--store", str(project), "events", "append", f"s/{n % 3}", "Ticked",
               "--data", json.dumps({"n": n, "f": n / 3}))  # fmt: skip
        export = tmp_path / "events.jsonl"
        code, _ = fm("--store", str(project), "events", "export", "-o", str(export))
        assert code == 0
        assert len(export.read_text().splitlines()) == 21
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        code, out = fm("init", str(fresh), "--import", str(export))
        assert code == 0, out
        assert "imported 21 events" in out
        with Repository.open(project) as a, Repository.open(fresh) as b:
            assert a.ledger.head() == b.ledger.head()
            assert list(a.ledger.read_raw()) == list(b.ledger.read_raw())

    def test_import_of_a_forged_line_fails_cleanly(self, project: Path, tmp_path: Path) -> None:
        export = tmp_path / "events.jsonl"
        fm("--store", str(project), "events", "export", "-o", str(export))
        forged = export.read_text().replace("RepositoryInitialized", "RepositoryHijacked")
        export.write_text(forged)
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        code, out = fm("init", str(fresh), "--import", str(export))
        assert code == 1
        assert "cannot import event seq 1" in out
        assert not (fresh / ".fmforge").exists(), "a failed import leaves no half repository"
        code, out = fm("--store", str(project), "events", "import", str(export))
        assert code == 1
        assert "already recorded" in out


class TestVerifyAndGc:
    def _with_object(self, project: Path) -> str:
        with Repository.open(project) as repo:
            from fmforge.ledger import NewEvent

            digest = repo.objects.put(b"weights" * 1000)
            repo.ledger.append("blobs/b", NewEvent("BlobAdded", {"d": digest}, refs=(digest,)))
            return digest

    def test_verify_ok(self, project: Path) -> None:
        self._with_object(project)
        code, out = fm("--store", str(project), "verify")
        assert code == 0
        assert "ok: 2 events" in out
        assert "1 referenced objects intact" in out

    def test_verify_reports_a_tampered_event(self, project: Path) -> None:
        self._with_object(project)
        db = sqlite3.connect(project / ".fmforge" / "ledger.db")
        with db:
            db.execute("UPDATE events SET stream = 'model/evil' WHERE seq = 2")
        db.close()
        code, out = fm("--store", str(project), "verify")
        assert code == 1
        assert out.strip() == (
            "fmforge: error: ledger chain broken at seq 2: event header does not match its "
            "recorded hash"
        )

    def test_verify_reports_a_missing_object(self, project: Path) -> None:
        digest = self._with_object(project)
        with Repository.open(project) as repo:
            repo.objects.delete(digest)
        code, out = fm("--store", str(project), "verify")
        assert code == 1
        assert f"object {digest} not found (referenced by event seq 2)" in out

    def test_verify_reports_a_corrupt_object(self, project: Path) -> None:
        digest = self._with_object(project)
        path = project / ".fmforge" / "objects" / digest[:2] / digest[2:]
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
        code, out = fm("--store", str(project), "verify")
        assert code == 1
        assert f"object {digest} is corrupt" in out
        assert "seq 2" in out

    def test_gc_deletes_only_old_unreferenced_objects(self, project: Path) -> None:
        kept = self._with_object(project)
        with Repository.open(project) as repo:
            orphan = repo.objects.put(b"orphan")
        code, out = fm("--store", str(project), "gc")
        assert code == 0
        assert "deleted 0 object(s)" in out
        assert "spared 1" in out
        code, out = fm("--store", str(project), "gc", "--grace-period", "0", "--dry-run")
        assert "would delete 1 object(s)" in out
        code, out = fm("--store", str(project), "gc", "--grace-period", "0")
        assert code == 0
        assert "deleted 1 object(s)" in out
        with Repository.open(project) as repo:
            assert repo.objects.has(kept)
            assert not repo.objects.has(orphan)


class TestErrors:
    def test_no_repository(self, tmp_path: Path) -> None:
        code, out = fm("log", cwd=tmp_path)
        assert code == 1
        assert out.startswith("fmforge: error: no fmforge repository in")

    def test_locked_store(self, project: Path) -> None:
        blocker = sqlite3.connect(project / ".fmforge" / "ledger.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            code, out = fm(
                "--store", str(project), "events", "append", "s", "A",
                env={"FMFORGE_LEDGER_BUSY_TIMEOUT_S": "0.2"},
            )  # fmt: skip
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert code == 1
        assert "stayed locked for 0.2s" in out

    def test_bad_ledger_url(self, tmp_path: Path) -> None:
        code, out = fm("init", str(tmp_path), "--ledger-url", "mysql://nope")
        assert code == 1
        assert "unsupported ledger URL" in out
        assert not (tmp_path / ".fmforge").exists(), "a failed init must leave nothing behind"

    def test_unknown_config_key(self, project: Path) -> None:
        (project / ".fmforge" / "config.toml").write_text("[objects]\ncompresion = 'off'\n")
        code, out = fm("--store", str(project), "log")
        assert code == 1
        assert "unknown setting 'objects.compresion'" in out

    def test_config_lists_every_setting(self, project: Path) -> None:
        from fmforge.settings import SETTINGS

        code, out = fm("--store", str(project), "config", env={"COLUMNS": "250"})
        assert code == 0
        for setting in SETTINGS:
            assert setting.name in out

    def test_entry_point_prints_one_line_and_no_traceback(self, tmp_path: Path) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "fmforge", "verify"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().count("\n") == 0
        assert result.stderr.startswith("fmforge: error: no fmforge repository")


@pytest.mark.postgres
@pytest.mark.s3
class TestTeamBackends:
    def test_repository_on_postgres_and_s3(
        self, tmp_path: Path, postgres_url: str, s3_endpoint: str
    ) -> None:
        code, out = fm(
            "init", str(tmp_path), "--ledger-url", postgres_url,
            "--objects-url", "s3://team-bucket/fmforge", "--s3-endpoint-url", s3_endpoint,
        )  # fmt: skip
        assert code == 0, out
        with Repository.open(tmp_path) as repo:
            from fmforge.ledger import NewEvent

            digest = repo.objects.put(b"shared weights" * 10_000)
            repo.ledger.append("blobs/b", NewEvent("BlobAdded", refs=(digest,)))
            assert type(repo.ledger).__name__ == "PostgresEventStore"
            assert type(repo.objects).__name__ == "S3ObjectStore"
        code, out = fm("--store", str(tmp_path), "verify")
        assert code == 0
        assert "ok: 2 events" in out
        assert "1 referenced objects intact" in out
