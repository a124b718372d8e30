"""README's first command, exactly as written, in a fresh checkout and a fresh venv, trains
on the compiled kernels; where they cannot be imported, tinylm says so once.

The first test builds tinylm from scratch (`pip install .` into a new venv: about two
minutes here), because that is the only way to see what a new user sees: run from the
checkout's root, `python -m tinylm.train` imports the checkout's own `tinylm/`, which has
no compiled kernels beside it.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
FIRST_COMMAND = "python -m venv .venv && . .venv/bin/activate && pip install . && python -m tinylm.train"
FEW_STEPS = " --steps 2 --eval-every 2 --sample-tokens 0 --batch-size 4 --seq-len 16 --out first-run"


def readme_first_command() -> str:
    return re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1).strip()


def fresh_checkout(target: Path) -> None:
    """The files a commit of this tree would hold: tracked and new, not ignored ones."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)


def clean_environment() -> dict:
    """This shell's environment without the test run's own venv."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "TINYLM_BACKEND")}
    active = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != active)
    return env


def test_readme_starts_with_the_first_command():
    assert readme_first_command() == FIRST_COMMAND


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_the_first_command_in_a_fresh_checkout_trains_on_the_compiled_kernels(tmp_path):
    checkout = tmp_path / "tinylm"
    fresh_checkout(checkout)
    result = subprocess.run(["bash", "-c", readme_first_command() + FEW_STEPS], cwd=checkout, env=clean_environment(),
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "backend cython" in result.stdout, result.stdout[-2000:]
    assert "running on the numpy reference" not in result.stderr
    assert (checkout / "first-run" / "checkpoint" / "model.safetensors").is_file()


MISSING_KERNELS = """
import sys, warnings
sys.modules["tinylm.kernels.cpu.embedding"] = None  # as if the kernels were never built
import tinylm
{choose}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    backends = [tinylm.get_backend(), tinylm.get_backend()]
print(backends[0], len(caught))
for warning in caught:
    print(warning.message)
"""


@pytest.mark.parametrize("choose, env, expected", [
    ("", {}, "numpy 1"),
    ("tinylm.set_backend('numpy')", {}, "numpy 0"),
    ("", {"TINYLM_BACKEND": "numpy"}, "numpy 0"),
], ids=["default: said once", "set_backend numpy: quiet", "TINYLM_BACKEND=numpy: quiet"])
def test_missing_kernels_are_said_once_with_the_reason_and_the_fix(choose, env, expected):
    result = subprocess.run([sys.executable, "-c", MISSING_KERNELS.format(choose=choose)],
                            env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and lines[0] == expected, result.stdout + result.stderr
    if expected.endswith("1"):
        assert "the compiled kernels are not importable" in lines[1] and "pip install ." in lines[1]
        assert "--backend numpy" in lines[1]
