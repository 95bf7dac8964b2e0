"""What an install of one workspace package brings with it, read from uv.lock."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def locked_closure(package: str, *extra: str) -> set[str]:
    """Names of the third-party distributions an install of `package` gets."""
    uv = shutil.which("uv") or str(REPO / ".tools" / "uv" / "bin" / "uv")  # as the Makefile
    command = [uv, "export", "--frozen", "--package", package, "--no-dev"]
    command += ["--no-hashes", "--no-emit-workspace", "--quiet", *extra]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    return {
        line.split("==")[0].split("[")[0]
        for line in result.stdout.splitlines()
        if line and not line.lstrip().startswith("#")
    }
