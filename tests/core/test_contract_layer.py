"""The contract (job types, their models, the API's wire models, settings) needs only pydantic.

conveyor-core declares pydantic and pydantic-settings as its only dependencies; the
broker, store and artifact libraries are its `runtime` extra, for the services. A client
or a tool that imports the registry must not need them.
"""

from __future__ import annotations

import json
import subprocess
import sys

from support.packaging import locked_closure

CONTRACT_MODULES = ["conveyor_core.jobs", "conveyor_core.api_models", "conveyor_core.settings"]

# In a child interpreter: refuse every third-party module that is not in the allowed
# distributions, then import the contract and print the job types it declares.
GUARDED_IMPORT = """
import importlib, importlib.abc, importlib.metadata, json, sys
allowed, modules = set(json.loads(sys.argv[1])), json.loads(sys.argv[2])
owners = importlib.metadata.packages_distributions()

class ContractOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top not in owners or top == "conveyor_core":  # the standard library, or ours
            return None
        if {d.lower().replace("_", "-") for d in owners[top]} & allowed:
            return None
        raise ImportError(f"{name} is not a dependency of the contract")

sys.meta_path.insert(0, ContractOnly())
for module in modules:
    importlib.import_module(module)
from conveyor_core.jobs import JOB_TYPES
print(json.dumps(sorted(JOB_TYPES)))
"""


def guarded_import(modules: list[str]) -> subprocess.CompletedProcess[str]:
    """Import `modules` in a child that refuses what conveyor-core's install does not bring."""
    allowed = sorted(name.lower() for name in locked_closure("conveyor-core"))
    assert "pydantic" in allowed and "fsspec" not in allowed and "celery" not in allowed
    return subprocess.run(
        [sys.executable, "-c", GUARDED_IMPORT, json.dumps(allowed), json.dumps(modules)],
        capture_output=True,
        text=True,
    )


def test_the_registry_imports_with_only_the_contracts_dependencies():
    result = guarded_import(CONTRACT_MODULES)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["cmd.run", "data.transform", "ml.train"]


def test_the_guard_refuses_a_runtime_library():
    # The same guard, asked for the artifact store (fsspec): it must fail, or the test
    # above proves nothing.
    result = guarded_import(["conveyor_core.artifacts"])
    assert result.returncode != 0
    assert "fsspec is not a dependency of the contract" in result.stderr
