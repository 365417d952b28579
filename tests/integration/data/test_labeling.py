"""WRENCH label matrices imported as dataset versions and fitted from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fmforge.data.labeling import LabelModel
from fmforge.data.labeling.wrench import import_wrench, label_matrix
from fmforge.errors import InvalidDataSource
from fmforge.repository import Repository
from tests.clirunner import fm

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def write_wrench(folder: Path, rows: int = 60, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for split, n in (("train", rows), ("valid", rows // 3), ("test", rows // 3)):
        records = {}
        for i in range(n):
            label = int(rng.integers(0, 2))
            weak = [label if rng.random() < 0.85 else 1 - label, label, -1]
            records[str(i)] = {
                "label": label,
                "weak_labels": weak,
                "data": {"text": f"{split} {i}"},
            }
        (folder / f"{split}.json").write_text(json.dumps(records))
    (folder / "label.json").write_text(json.dumps({"0": "ham", "1": "spam"}))


def test_import_wrench_keeps_the_matrix_and_the_cli_fits_it(
    repo: Repository, tmp_path: Path
) -> None:
    write_wrench(tmp_path / "w")
    code, out = fm(repo.root, "label", "import-wrench", str(tmp_path / "w"), "toy")
    assert code == 0, out
    assert "toy@v1" in out
    assert "100 rows, 3 labeling functions" in out
    L, y = label_matrix(repo, "toy", split="train")
    assert L.shape == (60, 3)
    stored = json.loads((tmp_path / "w" / "train.json").read_text())
    assert L.tolist() == [stored[str(i)]["weak_labels"] for i in range(60)]
    assert y.tolist() == [stored[str(i)]["label"] for i in range(60)]
    code, out = fm(repo.root, "label", "fit", "toy")
    assert code == 0, out
    assert "chosen: " in out
    assert "test accuracy 1.000" in out  # LF 2 is always right

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train.json").write_text(json.dumps({
        "0": {"label": 0, "weak_labels": [0, 1], "data": {"text": "a"}},
        "1": {"label": 0, "weak_labels": [0], "data": {"text": "b"}},
    }))  # fmt: skip
    with pytest.raises(InvalidDataSource, match=r"row '1' has 1 weak labels, earlier rows 2"):
        import_wrench(repo, tmp_path / "bad", "bad")
    code, out = fm(repo.root, "label", "import-wrench", str(tmp_path / "none"), "x")
    assert code == 1
    assert "not a folder" in out


@pytest.mark.skipif(not (SHARED / "wrench_youtube").is_dir(), reason="needs ../shared/data")
def test_youtube_from_the_registry_beats_wrenchs_best_label_model(repo: Repository) -> None:
    import_wrench(repo, SHARED / "wrench_youtube", "youtube")
    L, _ = label_matrix(repo, "youtube", split="train")
    L_dev, y_dev = label_matrix(repo, "youtube", split="valid")
    L_test, y_test = label_matrix(repo, "youtube", split="test")
    assert L.shape == (1586, 10)
    model = LabelModel().fit(L, L_dev=L_dev, y_dev=y_dev)
    assert np.mean(model.predict(L_test) == y_test) >= 0.852
