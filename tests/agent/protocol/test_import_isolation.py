"""The agent must stay small enough for a device: no server, ONNX tooling or TensorFlow on import."""

import json
import subprocess
import sys

import pytest

FORBIDDEN = ("fastapi", "sqlmodel", "sqlalchemy", "pydantic", "onnx", "tensorflow", "fleet_server", "compression")


def loaded_forbidden_modules(imports: str) -> list[str]:
    code = (
        "import json, sys\n"
        f"{imports}\n"
        f"print(json.dumps(sorted(name for name in sys.modules if name.split('.')[0] in {FORBIDDEN!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("module", ["agent", "agent.protocol"])
def test_importing_the_agent_leaves_heavy_packages_out(module: str) -> None:
    assert loaded_forbidden_modules(f"import {module}") == []


def test_no_agent_module_imports_heavy_packages() -> None:
    imports = (
        "import importlib, pkgutil, agent\n"
        "for info in pkgutil.walk_packages(agent.__path__, 'agent.'):\n"
        "    if not info.name.endswith('__main__'):\n"
        "        importlib.import_module(info.name)"
    )
    assert loaded_forbidden_modules(imports) == []
