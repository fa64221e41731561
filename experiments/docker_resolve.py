"""Does every package the Docker image installs exist on PyPI for it? The image (docker/Dockerfile) is Python 3.11
on x86-64 Linux with the pins of requirements.txt + constraints.txt (torch as its PyPI build, not the CPU venv's
`+cpu`), and whatever torch's own metadata then requires (the nvidia-* CUDA wheels). For each pin: a wheel that
CPython 3.11 on manylinux x86-64 can install, else an sdist pip can build. Asks PyPI's simple index (its JSON form);
no image is built.

    python -m experiments.docker_resolve > experiments/results/docker-resolve.txt
"""

from __future__ import annotations

import json
import re
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import Version

REPO_ROOT = Path(__file__).resolve().parents[1]
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)] + ["manylinux2014_x86_64",
                                                                              "linux_x86_64"]
TAGS = {*cpython_tags((3, 11), platforms=PLATFORMS), *compatible_tags((3, 11), platforms=PLATFORMS)}
# the image's environment, for the markers in torch's requirements
ENVIRONMENT = {**default_environment(), "python_version": "3.11", "python_full_version": "3.11.7",
               "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"}


def image_pins() -> dict[str, str]:
    """name -> version: constraints.txt (the CPU venv's freeze) with torch as requirements.txt pins it."""
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s#;]+)", (REPO_ROOT / "constraints.txt").read_text(), re.M))
    pins = {canonicalize_name(name): version for name, version in pins.items()}
    pins["torch"] = pins["torch"].split("+")[0]
    return pins


def get(url: str, accept: str = "application/vnd.pypi.simple.v1+json") -> bytes:
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return answer.read()


def release_files(name: str, version: str) -> list[dict]:
    """The files PyPI holds for name==version."""
    files = json.loads(get(f"https://pypi.org/simple/{name}/"))["files"]
    wanted = Version(version)

    def version_of(filename: str) -> Version | None:
        try:
            if filename.endswith(".whl"):
                return parse_wheel_filename(filename)[1]
            return parse_sdist_filename(filename)[1]
        except Exception:  # eggs, exes, misnamed files: not installable anyway
            return None

    return [f for f in files if not f.get("yanked") and version_of(f["filename"]) == wanted]


def installable(files: list[dict]) -> dict | None:
    """A wheel the image can install, else an sdist, else None."""
    for file in files:
        if file["filename"].endswith(".whl") and TAGS & set(parse_wheel_filename(file["filename"])[3]):
            return file
    return next((f for f in files if not f["filename"].endswith(".whl")), None)


def requires(file: dict) -> list[str]:
    """Requires-Dist of a wheel, from the metadata file PyPI serves beside it (PEP 658)."""
    metadata = get(file["url"] + ".metadata", accept="*/*").decode()
    return [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]


class Found(NamedTuple):
    version: str
    file: str | None  # "wheel <filename>" or "sdist <filename>"; None: nothing installable
    requires: list[str]  # torch's Requires-Dist (the only one read)
    error: str | None = None


def check(name: str, version: str) -> Found:
    try:
        found = installable(release_files(name, version))
    except Exception as error:  # reported, not raised: every failure shows at once
        return Found(version, None, [], f"{type(error).__name__}: {error}")
    if found is None:
        return Found(version, None, [])
    kind = "wheel" if found["filename"].endswith(".whl") else "sdist"
    needs = requires(found) if name == "torch" and kind == "wheel" else []
    return Found(version, f"{kind} {found['filename']}", needs)


def check_all(pins: dict[str, str]) -> dict[str, Found]:
    with ThreadPoolExecutor(16) as pool:
        return dict(zip(pins, pool.map(check, pins, pins.values()), strict=True))


def main() -> int:
    pins = image_pins()
    results = check_all(pins)
    # torch's own requirements (nvidia-* wheels) that the CPU freeze does not hold, with their exact pins
    extra = {}
    for spec in results["torch"].requires:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        if name in pins or (requirement.marker and not requirement.marker.evaluate(ENVIRONMENT)):
            continue
        exact = [s.version for s in requirement.specifier if s.operator == "=="]
        if exact:
            extra[name] = exact[0]
    results |= check_all(extra)
    missing = 0
    for name, found in sorted(results.items()):
        origin = "torch's requirement" if name in extra else "constraints.txt"
        if found.file is None:
            missing += 1
            print(f"MISSING  {name}=={found.version} ({origin}) {found.error or ''}")
        else:
            print(f"ok       {name}=={found.version} ({origin}): {found.file}")
    print(f"\n{len(results)} packages for Python 3.11 on x86-64 Linux: {len(results) - missing} on PyPI, "
          f"{missing} missing")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
