"""Build: the hot modules compiled with mypyc where a C compiler exists, pure Python otherwise.

`FASTGW_PURE=1 pip install .` (or no compiler, or no mypy) installs the same code uncompiled.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig

from setuptools import setup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fastgw.build_info import COMPILED_MODULES  # noqa: E402  (stdlib-only module)


def compiler_available() -> bool:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(compiler) is not None


def ext_modules() -> list:
    if os.environ.get("FASTGW_PURE") == "1" or not compiler_available():
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        return []
    paths = [name.replace(".", "/") + ".py" for name in COMPILED_MODULES]
    return mypycify(paths, opt_level="3", group_name="fastgw_compiled")


setup(ext_modules=ext_modules())
