"""Issue 10's defects, each a regression test: a record that cannot be poisoned, forged or
misattributed."""

from __future__ import annotations

import ast
import json
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fmforge.errors import BranchDiverged, InvalidEvent, InvalidName, ViewMismatch
from fmforge.ledger import NewEvent
from fmforge.models import ModelRefs, checkout, commit_model, commit_tensors, delete_branch
from fmforge.repository import Repository, acting_as
from fmforge.tracking import start_run
from tests.clirunner import fm
from tests.hostile.harness import cli_refused
from tests.modelfiles import adam_step, base_weights, same_files, write_model

SRC = Path(__file__).resolve().parents[2] / "src" / "fmforge"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    assert fm(root, "init")[0] == 0
    return root


def _three_commits(root: Path, tmp_path: Path) -> list[str]:
    weights = base_weights()
    commits = []
    with Repository.open(root) as repo:
        for step in range(3):
            path = write_model(tmp_path / f"v{step}", adam_step(weights, step), note=str(step))
            commits.append(commit_model(repo, "minilm", path, f"step {step}").commit)
        repo.view(ModelRefs)  # any read brings views.db up to date
    return commits


class TestDefect1OneAppendBricksTheRegistry:
    def test_a_domain_event_through_events_append_is_refused_and_model_ls_works(
        self, store: Path
    ) -> None:
        line = cli_refused(
            store, "events", "append", "model/foo", "ModelCommitted", "--data", '{"x":1}'
        )
        assert "reserved" in line
        assert "fmforge model" in line
        for args in (("model", "ls"), ("gc", "--dry-run"), ("verify",)):
            code, out = fm(store, *args)
            assert code == 0, out

    def test_the_readme_example_cannot_poison_the_registry(self, store: Path) -> None:
        with Repository.open(store) as repo:
            digest = repo.objects.put(b"weights")
            with pytest.raises(InvalidEvent, match="reserved"):
                repo.ledger.append(
                    "model/sentiment",
                    NewEvent("ModelCommitted", {"digest": digest}, refs=(digest,)),
                    expected_version=0,
                )
            assert repo.view(ModelRefs).models() == []


class TestDefect2ForgedDomainEvents:
    def test_a_forged_branch_is_refused(self, store: Path, tmp_path: Path) -> None:
        _three_commits(store, tmp_path)
        data = '{"branch":"evil","commit":"deadbeef","model":"minilm"}'
        cli_refused(store, "events", "append", "model/minilm", "BranchCreated", "--data", data)
        cli_refused(store, "events", "append", "notes/x", "BranchCreated", "--data", data)
        _code, out = fm(store, "model", "branch", "minilm")
        assert "evil" not in out

    def test_outside_facts_are_recorded_and_named_streams_checked(self, store: Path) -> None:
        code, out = fm(store, "events", "append", "notes/2026", "NoteTaken", "--data", "{}")
        assert code == 0, out
        cli_refused(store, "events", "append", "../../x", "NoteTaken")
        cli_refused(store, "events", "append", "notes//x", "NoteTaken")


class TestDefect3TamperedViews:
    def _tamper(self, root: Path, sql: str, *params: object) -> None:
        db = sqlite3.connect(root / ".fmforge" / "views.db")
        db.execute(sql, params)
        db.commit()
        db.close()

    def test_a_branch_pointed_back_is_found_refused_and_repaired(
        self, store: Path, tmp_path: Path
    ) -> None:
        first, _, last = _three_commits(store, tmp_path)
        self._tamper(store, "UPDATE model_branches SET commit_id = ? WHERE branch = 'main'", first)
        line = cli_refused(store, "verify", "--no-tensors")
        assert "rebuild-views" in line
        code, out = fm(store, "verify", "--no-tensors")
        assert "model_refs: table model_branches, model=minilm, branch=main: changed" in out
        line = cli_refused(store, "model", "checkout", "minilm@main", "-o", str(tmp_path / "o"))
        assert "in the view" in line
        assert not (tmp_path / "o").exists()
        with Repository.open(store) as repo, pytest.raises(ViewMismatch):
            checkout(repo, "minilm@main", tmp_path / "o2")
        code, out = fm(store, "verify", "--rebuild-views", "--no-tensors")
        assert code == 0, out
        code, out = fm(store, "model", "checkout", "minilm@main", "-o", str(tmp_path / "o3"))
        assert code == 0, out
        assert last[:12] in out
        assert same_files(tmp_path / "v2", tmp_path / "o3")

    def test_an_edited_message_and_actor_are_found(self, store: Path, tmp_path: Path) -> None:
        _three_commits(store, tmp_path)
        self._tamper(store, "UPDATE model_commits SET message = 'forged', actor = 'mallory'")
        code, out = fm(store, "verify", "--no-tensors")
        assert code == 1
        assert out.count("model_refs: table model_commits, commit_id=") == 3

    def test_a_dataset_row_count_set_to_one_is_found(self, store: Path, tmp_path: Path) -> None:
        source = tmp_path / "rows.csv"
        source.write_text("a,b\n" + "".join(f"{i},{i * 2}\n" for i in range(50)))
        assert fm(store, "data", "add", "rows", str(source))[0] == 0
        self._tamper(store, "UPDATE dataset_versions SET rows = 1")
        code, out = fm(store, "verify", "--no-tensors")
        assert code == 1
        assert "datasets: table dataset_versions" in out
        code, out = fm(store, "verify", "--rebuild-views", "--no-tensors")
        assert code == 0, out
        code, out = fm(store, "data", "show", "rows")
        assert "50" in out

    def test_a_dataset_version_hidden_from_the_view_is_refused(
        self, store: Path, tmp_path: Path
    ) -> None:
        for n in (1, 2):
            source = tmp_path / f"v{n}.csv"
            source.write_text("a\n" + "".join(f"{i}\n" for i in range(n * 10)))
            assert fm(store, "data", "add", "rows", str(source))[0] == 0
        self._tamper(store, "DELETE FROM dataset_versions WHERE number = 2")
        line = cli_refused(store, "data", "export", "rows", "-o", str(tmp_path / "out.csv"))
        assert "in the ledger" in line
        assert not (tmp_path / "out.csv").exists()

    def test_views_of_another_ledger_are_rebuilt(self, tmp_path: Path) -> None:
        a, b = tmp_path / "a", tmp_path / "b"
        for root in (a, b):
            root.mkdir()
            assert fm(root, "init")[0] == 0
        with Repository.open(a) as repo:
            commit_tensors(repo, "m", {"w": np.ones(4, np.float32)}, message="a")
        with Repository.open(b) as repo:
            commit_tensors(repo, "other", {"w": np.zeros(4, np.float32)}, message="b")
            repo.view(ModelRefs)
        # b's views copied over a's: a's ledger has another history, so they are not trusted
        (a / ".fmforge" / "views.db").write_bytes((b / ".fmforge" / "views.db").read_bytes())
        for suffix in ("-wal", "-shm"):
            (a / ".fmforge" / f"views.db{suffix}").unlink(missing_ok=True)
        with Repository.open(a) as repo:
            assert repo.view(ModelRefs).models() == ["m"]


class TestDefect4Ids:
    def test_seeded_global_randomness_gives_distinct_ids(self, tmp_path: Path) -> None:
        random.seed(0)
        np.random.seed(0)
        with Repository.init(tmp_path) as repo:
            run_ids = []
            for _ in range(100):
                random.seed(0)
                np.random.seed(0)
                with start_run("p", repo=repo, system_interval=None) as run:
                    run_ids.append(run.id)
            assert len(set(run_ids)) == 100
            results = repo.ledger.append(
                "notes/x", [NewEvent("NoteTaken", {"n": n}) for n in range(5000)]
            )
            assert results.version == 5000
            random.seed(0)
            more = repo.ledger.append(
                "notes/y", [NewEvent("NoteTaken", {"n": n}) for n in range(5000)]
            )
            assert not more.deduplicated
            ids = [e.event_id for e in repo.ledger.read_all()]
            assert len(ids) == len(set(ids))

    def test_run_names_are_unique_in_a_project(self, repo: Repository) -> None:
        names = []
        for _ in range(3):
            with start_run("p", repo=repo, name="baseline", system_interval=None) as run:
                names.append(run.name)
        assert names == ["baseline", "baseline-2", "baseline-3"]

    def test_forked_seeded_workers_do_not_collide(self, tmp_path: Path) -> None:
        script = (
            "import os, random, sys\n"
            "from fmforge.ledger.events import new_event_id\n"
            "random.seed(0)\n"
            "pids = []\n"
            "for _ in range(4):\n"
            "    pid = os.fork()\n"
            "    if pid == 0:\n"
            "        random.seed(0)\n"
            "        sys.stdout.write(' '.join(new_event_id() for _ in range(1000)) + '\\n')\n"
            "        sys.stdout.flush()\n"
            "        os._exit(0)\n"
            "    pids.append(pid)\n"
            "for pid in pids:\n"
            "    os.waitpid(pid, 0)\n"
        )
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        ids = out.stdout.split()
        assert len(ids) == 4000
        assert len(set(ids)) == 4000


class TestDefect5GitBranches:
    def test_a_commit_that_would_drop_history_is_refused_unless_forced(
        self, repo: Repository, tmp_path: Path
    ) -> None:
        weights = base_weights()
        base = commit_model(repo, "m", write_model(tmp_path / "a", weights), "base").commit
        v1 = write_model(tmp_path / "b", adam_step(weights, 1))
        ahead = commit_model(repo, "m", v1, "reviews 1", branch="reviews").commit
        v2 = write_model(tmp_path / "c", adam_step(weights, 2))
        events = repo.ledger.count()
        with pytest.raises(BranchDiverged, match="drop 1 commit") as caught:
            commit_model(repo, "m", v2, "x", branch="reviews", parent="main")
        assert caught.value.dropped == [ahead]
        assert repo.ledger.count() == events
        forced = commit_model(repo, "m", v2, "x", branch="reviews", parent="main", force=True)
        assert forced.dropped == (ahead,)
        assert forced.parents == (base,)
        (move,) = [e for e in repo.ledger.read_stream("model/m") if e.type == "BranchMoved"][-1:]
        assert move.data["reason"] == "force"
        assert move.data["dropped"] == [ahead]

    def test_a_new_branch_forks_from_main_and_orphan_makes_a_root(
        self, repo: Repository, tmp_path: Path
    ) -> None:
        weights = base_weights()
        head = commit_model(repo, "m", write_model(tmp_path / "a", weights), "base").commit
        fork = commit_model(
            repo, "m", write_model(tmp_path / "b", adam_step(weights, 1)), "f", branch="exp"
        )
        assert fork.parents == (head,)
        assert fork.forked_from == ("main", head)
        root = commit_model(repo, "m", tmp_path / "b", "root", branch="fresh", orphan=True)
        assert root.parents == ()
        code, out = fm(repo.root, "model", "commit", "m", str(tmp_path / "a"), "-m", "y",
                       "--branch", "exp2")  # fmt: skip
        assert code == 0, out
        assert f"new branch exp2 from main ({head[:12]})" in out

    @pytest.mark.parametrize("name", ["", "../../etc", "x~1", "a..b", "a b", "-x", "x.lock",
                                      "HEAD", "a//b", "a/", "[red]x"])  # fmt: skip
    def test_one_name_rule_everywhere(self, store: Path, tmp_path: Path, name: str) -> None:
        (_commit, *_) = _three_commits(store, tmp_path)
        cli_refused(store, "model", "commit", "minilm", str(tmp_path / "v0"), "-m", "x",
                    f"--branch={name}")  # fmt: skip
        cli_refused(store, "model", "branch", "minilm", "--", name, "main")
        cli_refused(store, "model", "tag", "minilm", "--", name, "main")

    def test_a_prefix_of_a_commit_id_is_not_a_branch_name(
        self, store: Path, tmp_path: Path
    ) -> None:
        (commit, *_) = _three_commits(store, tmp_path)
        line = cli_refused(store, "model", "commit", "minilm", str(tmp_path / "v0"), "-m", "x",
                           "--branch", commit[:8])  # fmt: skip
        assert "commit id" in line
        with Repository.open(store) as repo, pytest.raises(InvalidName):
            commit_tensors(repo, "minilm", {"w": np.ones(2)}, message="x", branch=commit[:8])

    def test_branches_are_deleted_as_git_does(self, repo: Repository, tmp_path: Path) -> None:
        weights = base_weights()
        commit_model(repo, "m", write_model(tmp_path / "a", weights), "base")
        only = commit_model(
            repo, "m", write_model(tmp_path / "b", adam_step(weights, 1)), "f", branch="exp"
        ).commit
        with pytest.raises(BranchDiverged, match="no other branch or tag"):
            delete_branch(repo, "m", "exp")
        assert delete_branch(repo, "m", "exp", force=True) == only
        assert "exp" not in repo.view(ModelRefs).branches("m")
        code, out = fm(repo.root, "model", "branch", "m", "b2", "main")
        assert code == 0, out
        code, out = fm(repo.root, "model", "branch", "m", "-d", "b2")
        assert code == 0, out
        assert "deleted branch b2" in out
        cli_refused(repo.root, "model", "branch", "m", "-d", "nope")

    def test_log_n_shows_the_newest(self, store: Path) -> None:
        for n in range(8):
            assert fm(store, "events", "append", "notes/x", "NoteTaken", "--data",
                      json.dumps({"n": n}))[0] == 0  # fmt: skip
        _code, out = fm(store, "log", "-n", "5", "--json")
        assert [json.loads(line)["data"].get("n") for line in out.splitlines()] == [7, 6, 5, 4, 3]


class TestDefect6Metrics:
    def test_an_unrepresentable_step_is_refused_and_loses_nothing(self, repo: Repository) -> None:
        from fmforge.errors import InvalidMetric
        from fmforge.tracking import read_metric

        with start_run("p", repo=repo, system_interval=None) as run:
            run.log({"loss": 1.0}, step=1)
            with pytest.raises(InvalidMetric):
                run.log({"loss": 2.0}, step=10**30)
            with pytest.raises(InvalidMetric):
                run.log({"loss": "2"}, step=2)
            run.log({"loss": 3.0}, step=3)
        steps, values = read_metric(repo, run.id, "loss")
        assert steps.tolist() == [1, 3]
        assert values.tolist() == [1.0, 3.0]

    @pytest.mark.slow
    def test_a_tight_loop_killed_at_two_seconds_keeps_every_step_older_than_one(
        self, tmp_path: Path
    ) -> None:
        import signal
        import time

        import psutil

        from fmforge.tracking import read_metric

        with Repository.init(tmp_path):
            pass
        script = (
            "import time, sys\n"
            "from fmforge.repository import Repository\n"
            "from fmforge.tracking import start_run\n"
            "repo = Repository.open(sys.argv[1])\n"
            "with start_run('tight', repo=repo, system_interval=None, name='t') as run:\n"
            "    sys.stdout.write(run.id + '\\n'); sys.stdout.flush()\n"
            "    step = 0\n"
            "    while True:\n"
            "        now = time.time()\n"
            "        run.log({'t': now, 'a': 1.0, 'b': 2.0, 'c': 3.0, 'd': 4.0}, step=step)\n"
            "        step += 1\n"
        )
        env = {**os.environ, "FMFORGE_USER": "loop"}
        child = subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, env=env,
            text=True,
        )  # fmt: skip
        assert child.stdout is not None
        run_id = child.stdout.readline().strip()
        started = time.time()
        peak = 0
        while time.time() - started < 2.0:
            peak = max(peak, psutil.Process(child.pid).memory_info().rss)
            time.sleep(0.05)
        killed_at = time.time()
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        with Repository.open(tmp_path) as repo:
            steps, values = read_metric(repo, run_id, "t")
        assert steps.size > 1000
        assert values.max() >= killed_at - 1.0  # every step older than 1 s was durable
        assert peak < 500 << 20


class TestDefect7Verify:
    def test_a_payload_rewritten_as_text_is_reported(self, store: Path) -> None:
        assert fm(store, "events", "append", "notes/x", "NoteTaken", "--data", '{"a":1}')[0] == 0
        db = sqlite3.connect(store / ".fmforge" / "ledger.db")
        db.execute("UPDATE events SET data = CAST(data AS TEXT) WHERE seq = 2")
        db.commit()
        db.close()
        code, out = fm(store, "verify")
        assert code == 1
        assert "seq 2" in out
        assert "Traceback" not in out


class TestDefect8Checkpoints:
    def test_a_checkpoint_descends_from_the_base_commit(self, repo: Repository) -> None:
        base = commit_tensors(
            repo, "base", {"w": np.zeros((8, 8), np.float32)}, message="base"
        ).commit
        with start_run("p", repo=repo, base_model="base@main", system_interval=None) as run:
            first = run.log_checkpoint({"w": np.ones((8, 8), np.float32)})
            second = run.log_checkpoint({"w": np.full((8, 8), 2.0, np.float32)})
        index = repo.view(ModelRefs)
        assert index.commit(first).parents == (base,)
        assert index.commit(second).parents == (first,)
        assert index.branches("base")[f"runs/{run.id}"] == second
        assert index.branches("base")["main"] == base
        code, out = fm(repo.root, "model", "diff", f"base@{base}", f"base@{first}")
        assert code == 0, out


class TestTheWritePath:
    def test_events_carry_the_principal(self, repo: Repository) -> None:
        from fmforge.events import ObjectsPruned

        repo.record("objects/pruned", ObjectsPruned({"objects": [], "reason": "a"}))
        with acting_as("alice@team"):
            repo.record("objects/pruned", ObjectsPruned({"objects": [], "reason": "b"}))
        spoof = ObjectsPruned({"objects": [], "reason": "c"}, meta={"actor": "mallory"})
        repo.record("objects/pruned", spoof)
        actors = [e.meta["actor"] for e in repo.ledger.read_stream("objects/pruned")]
        assert actors == ["tester@fmforge", "alice@team", "tester@fmforge"]

    def test_no_domain_module_calls_the_ledgers_append(self) -> None:
        """Only the ledger itself, the repository's write path, `events append` (outside facts)
        and the demo of the raw ledger API may call ``append`` on a ledger."""
        allowed = {"repository.py", "cli/events.py", "demo.py"}
        offenders = []
        for path in SRC.rglob("*.py"):
            relative = path.relative_to(SRC).as_posix()
            if relative.startswith("ledger/") or relative in allowed:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("append", "_append", "record", "import_records")
                    and isinstance(node.func.value, ast.Attribute)
                    and node.func.value.attr in ("ledger", "store")
                ):
                    offenders.append(f"{relative}:{node.lineno}")
        assert offenders == []

    def test_no_domain_module_scans_a_stream_by_hand(self) -> None:
        """Reads go through projections (``repo.view``); only the ledger's own tools, the
        confirmations against the ledger and the transfer of streams read events directly."""
        allowed = {
            "repository.py", "cli/app.py", "cli/events.py", "demo.py", "views.py",
            "models/history.py", "data/versions.py", "remotes/backends.py", "remotes/sync.py",
        # serving follows ref moves live (hot reload): a subscription from the head, not a scan
        "serving/deployment.py", "serving/vllm_plugin.py",
        }  # fmt: skip
        offenders = []
        for path in SRC.rglob("*.py"):
            relative = path.relative_to(SRC).as_posix()
            if relative.startswith("ledger/") or relative in allowed:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("read_stream", "read_all", "subscribe")
                ):
                    offenders.append(f"{relative}:{node.lineno}")
        assert offenders == []
