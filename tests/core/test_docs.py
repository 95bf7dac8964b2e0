"""Generated documentation matches the code it is generated from."""

import subprocess
import sys
from pathlib import Path

from conveyor_core.settings import settings_table

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"


def test_the_readme_settings_table_matches_the_settings_model():
    assert settings_table() in README.read_text(), (
        "README.md's settings table is stale: run `make settings-table` and paste it"
    )


def test_the_reference_pages_match_the_models():
    check = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "build.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
