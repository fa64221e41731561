"""The Docker image cannot be built on CI (no engine): lint it, and keep it installing exactly what the tests run on
(the same Python, requirements.txt, constraints.txt) with no token baked in."""

import re
import subprocess
import sys

from tests.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "docker/Dockerfile"


def build_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)", DOCKERFILE.read_text(), flags=re.M))


def test_dockerfile_passes_hadolint() -> None:
    hadolint = REPO_ROOT / ".venv/bin/hadolint"
    result = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_the_python_the_tests_run() -> None:
    image = build_args()["PYTHON_IMAGE"]
    assert image.startswith(f"python:{sys.version_info.major}.{sys.version_info.minor}-")
    assert "FROM ${PYTHON_IMAGE}" in DOCKERFILE.read_text()


def test_the_image_installs_the_tested_pins_with_torch_from_pypi() -> None:
    text = DOCKERFILE.read_text()
    assert "-r requirements.txt -c /tmp/constraints-gpu.txt" in text
    # the CPU freeze pins torch as +cpu: that one line is dropped, torch comes from requirements.txt's pin
    assert "grep -v '^torch==' constraints.txt > /tmp/constraints-gpu.txt" in text
    torch_lines = [line for line in (REPO_ROOT / "constraints.txt").read_text().splitlines()
                   if line.startswith("torch==")]
    assert torch_lines == ["torch==2.13.0+cpu"]
    assert "torch==2.13.0\n" in (REPO_ROOT / "requirements.txt").read_text()


def test_no_token_is_baked_into_the_image() -> None:
    assert "HF_TOKEN" not in re.sub(r"^#.*$", "", DOCKERFILE.read_text(), flags=re.M)
