"""``mypy src`` stays clean (it found two real bugs: a crash of transfer attacks with JSMA, and ``train --init``
with a defended model saving an unloadable file). mypy comes with the ``dev`` extra; without it this skips."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_is_clean_on_the_package() -> None:
    api = pytest.importorskip("mypy.api", reason="mypy is in the dev extra: pip install -e '.[dev]'")
    out, err, status = api.run([str(ROOT / "src"), "--no-error-summary", "--hide-error-context"])
    assert status == 0, out + err
