"""The Docker image cannot be built on CI (no engine): lint it, and keep its base tag and extra pins in step
with requirements.txt."""

import re
import subprocess
import sys

from tests.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "docker/Dockerfile"


def pins(path) -> dict[str, str]:
    found = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s#]+)", path.read_text(), flags=re.M)
    return {name.lower().replace("_", "-"): version for name, version in found}


def build_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)", DOCKERFILE.read_text(), flags=re.M))


def test_dockerfile_passes_hadolint() -> None:
    hadolint = REPO_ROOT / ".venv/bin/hadolint"
    result = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_tag_matches_the_pinned_axolotl_torch_and_python() -> None:
    args, required = build_args(), pins(REPO_ROOT / "requirements.txt")
    assert args["AXOLOTL_VERSION"] == required["axolotl"]
    assert args["TORCH_VERSION"] == required["torch"]
    assert args["PYTHON_VERSION"] == f"{sys.version_info.major}.{sys.version_info.minor}"  # the venv's Python
    assert "FROM axolotlai/axolotl:${AXOLOTL_VERSION}-py${PYTHON_VERSION}-cu${CUDA}-${TORCH_VERSION}" \
        in DOCKERFILE.read_text()


def test_image_extras_use_the_same_pins_as_requirements() -> None:
    extras, required = pins(REPO_ROOT / "docker/requirements.txt"), pins(REPO_ROOT / "requirements.txt")
    assert extras and all(required[name] == version for name, version in extras.items())


def test_no_token_is_baked_into_the_image() -> None:
    assert "HF_TOKEN" not in re.sub(r"^#.*$", "", DOCKERFILE.read_text(), flags=re.M)
