"""The verifier shipped for users (``demo_data/verify_proof.py``, run by ``fmforge demo``) is
the tests' standalone verifier with a command line: the same functions, word for word."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
SHIPPED = HERE.parents[2] / "src" / "fmforge" / "demo_data" / "verify_proof.py"


def test_the_shipped_verifier_is_the_tests_standalone_one() -> None:
    ours = (HERE / "standalone_verifier.py").read_text()
    functions = ours[ours.index("def _fold") :]
    shipped = SHIPPED.read_text()
    assert functions.strip() in shipped
    assert "fmforge" not in shipped.split('"""', 2)[2].replace("fmforge's", "")
