"""What lists the job types outside the code is generated from the registry and current."""

from __future__ import annotations

import subprocess
import sys

from chart_support import REPO


def test_procfile_compose_and_the_charts_job_types_are_current():
    result = subprocess.run(
        [sys.executable, str(REPO / "deploy" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
