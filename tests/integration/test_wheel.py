"""The compiled wheel: `pip wheel .` builds the hot modules with mypyc into a binary wheel, and an
install of it on a machine without a C compiler runs compiled (`fastgw --version` says so).

Slow (the build type-checks and compiles the hot modules, about a minute): run once, in the
compiled pass of the suite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fastgw.build_info import COMPILED_MODULES

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(os.environ.get("FASTGW_PURE") == "1", reason="the compiled pass runs it")
@pytest.mark.skipif(shutil.which("gcc") is None, reason="building the wheel needs a C compiler")
def test_the_wheel_carries_the_compiled_modules_and_runs_them_without_a_compiler(
    tmp_path: Path,
) -> None:
    source = tmp_path / "source"
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        path = Path(os.fsdecode(name))
        if path.parts[0] in ("tests", "bench"):
            continue
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, source / path)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), "."],
        cwd=source,
        check=True,
        timeout=600,
    )
    (wheel,) = wheels.glob("fastgw-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in COMPILED_MODULES:
        stem = module.replace(".", "/")
        assert any(name.startswith(stem + ".") and name.endswith(".so") for name in names), module

    # installed where no compiler is on the PATH: it runs the compiled modules
    target = tmp_path / "installed"
    bare = {"PATH": "/nonexistent", "HOME": str(tmp_path), "CC": "/bin/false"}
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
         str(wheel)],
        env=bare,
        check=True,
        timeout=300,
    )  # fmt: skip
    site = [path for path in sys.path if path.endswith("site-packages")]
    env = {**bare, "PYTHONPATH": os.pathsep.join([str(target), *site])}
    version = subprocess.run(
        [sys.executable, "-m", "fastgw", "--version"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert version.stdout.strip().endswith("(compiled with mypyc)"), version.stdout
    where = subprocess.run(
        [sys.executable, "-c", "import fastgw.http.server as module; print(module.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert Path(where.stdout.strip()).is_relative_to(target), where.stdout  # the wheel's, not ours
