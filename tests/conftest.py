"""Shared test set-up: a per-test cache folder and the real datasets in ``../shared/data``.

The real-data root lies next to the repository (``../shared/data``), or wherever
``POINTEA_TEST_DATA`` points. A test marked
``@pytest.mark.realdata("folder", ...)`` needs those folders of it and is skipped, naming the
missing folder, when one is absent; the ``shared_data`` fixture gives the root.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(
    os.environ.get("POINTEA_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("realdata")
    if marker is None:
        return
    for folder in marker.args:
        path = SHARED_DATA / folder
        if not path.is_dir():
            pytest.skip(f"real data not found at {path}")


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """An array cache folder of the test's own (not created)."""
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root folder of the real datasets."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA
