"""Builds the `asyncplug` executable from client/asyncplug.c with the system C compiler
(`cc`, or $CC) and installs it in bin/. The metadata is in pyproject.toml.

Without a working compiler the install still succeeds: `asyncplug` is then the Python
client's console script (asyncplug.client:main), which does the same, at the cost of
an interpreter's start per command (README "Install").
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from setuptools import Distribution, setup

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "client" / "asyncplug.c"
BUILT = HERE / "build" / "client" / "asyncplug"
PYTHON_CLIENT = "asyncplug.client:main"


def version() -> str:
    text = (HERE / "asyncplug" / "__init__.py").read_text(encoding="utf-8")
    found = re.search(r'^__version__ = "([^"]+)"$', text, re.M)
    assert found, "asyncplug/__init__.py has no __version__"
    return found.group(1)


def c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def compile_client() -> bool:
    """Compile the client into build/client; False (and why, on stderr) when it fails."""
    BUILT.parent.mkdir(parents=True, exist_ok=True)
    command = [
        *shlex.split(os.environ.get("CC") or "cc"), "-std=c99", "-O2",
        f"-DASYNCPLUG_VERSION={c_string(version())}",
        f"-DASYNCPLUG_PYTHON={c_string(sys.executable)}",  # a venv's: not resolved
        "-o", str(BUILT), str(SOURCE),
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"asyncplug: no C compiler ({exc}): the executable is the Python client",
              file=sys.stderr)  # fmt: skip
        return False
    if done.returncode != 0:
        print(f"asyncplug: {shlex.join(command)} failed: the executable is the Python client\n"
              f"{done.stderr}", file=sys.stderr)  # fmt: skip
        return False
    return True


class BinaryDistribution(Distribution):
    """The wheel holds a compiled program: tag it for this platform."""

    def has_ext_modules(self) -> bool:
        return True


class BuildClient(Distribution().get_command_class("build_scripts")):  # type: ignore[misc]
    """Copies the compiled client as it is (build_scripts would read it as Python text)."""

    def copy_scripts(self) -> tuple[list[str], list[str]]:
        self.mkpath(self.build_dir)
        built = []
        for script in self.scripts:
            target = os.path.join(self.build_dir, os.path.basename(script))
            self.copy_file(script, target)
            os.chmod(target, 0o755)
            built.append(target)
        return built, built


if compile_client():
    setup(
        distclass=BinaryDistribution,
        scripts=[os.path.relpath(BUILT, HERE)],
        cmdclass={"build_scripts": BuildClient},
        entry_points={"console_scripts": []},  # pyproject's dynamic scripts: none
    )
else:
    setup(entry_points={"console_scripts": [f"asyncplug = {PYTHON_CLIENT}"]})
