"""The tutorials read ../shared/data (or CROWDSORT_SHARED_DATA): without it they are skipped,
saying why, except under CI=true where its absence is a failure."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("CROWDSORT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def pytest_collection_modifyitems(config, items):
    if SHARED.is_dir():
        return
    for item in items:
        if str(item.fspath).endswith(".ipynb"):
            if os.environ.get("CI") == "true":
                pytest.exit(f"{SHARED} is missing: CI must run the notebooks on the real photos", returncode=1)
            item.add_marker(pytest.mark.skip(reason=f"{SHARED} not found (the notebooks' photos; set CROWDSORT_SHARED_DATA)"))
