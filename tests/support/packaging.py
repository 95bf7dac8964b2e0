"""uv as the Makefile finds it, and what an install of one workspace package brings with it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def uv_executable() -> str:
    """The Makefile's order: $UV, then `uv` on PATH, then the private copy in .tools/uv."""
    return os.environ.get("UV") or shutil.which("uv") or str(REPO / ".tools" / "uv" / "bin" / "uv")


def locked_closure(package: str, *extra: str) -> set[str]:
    """Names of the third-party distributions an install of `package` gets."""
    command = [uv_executable(), "export", "--frozen", "--package", package, "--no-dev"]
    command += ["--no-hashes", "--no-emit-workspace", "--quiet", *extra]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    return {
        line.split("==")[0].split("[")[0]
        for line in result.stdout.splitlines()
        if line and not line.lstrip().startswith("#")
    }
