"""Suite-wide: which build runs (compiled or pure), and no stale compiled modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastgw import build_info

ROOT = Path(__file__).resolve().parents[1]
COMPILED_STAMP = ROOT / ".venv" / ".compiled"  # the Makefile's: when the last build ran


def pytest_report_header() -> str:
    return f"fastgw build: {build_info.build()}"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compiled modules built before a source last changed would test old code."""
    if build_info.build() == "pure Python" or not COMPILED_STAMP.exists():
        return
    built = COMPILED_STAMP.stat().st_mtime
    changed = [p for p in ROOT.joinpath("fastgw").rglob("*.py") if p.stat().st_mtime > built]
    if changed:
        pytest.exit(
            f"the compiled build is older than {changed[0].relative_to(ROOT)}: run `make install`",
            returncode=2,
        )
