"""requirements/*.lock pin what pyproject.toml asks for, so a fresh machine installs the tested versions."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCKS = {"demo.lock": [], "test.lock": ["test"]}  # lock file -> the extras it installs


def _pins(lock: Path) -> dict[str, Version]:
    pins = {}
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{lock.name}: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = Version(version.split(";")[0].strip())
    return pins


@pytest.mark.parametrize("lock_name", list(LOCKS))
def test_lock_pins_every_requirement_of_pyproject(lock_name):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in LOCKS[lock_name]:
        wanted += project["optional-dependencies"][extra]
    pins = _pins(ROOT / "requirements" / lock_name)
    for spec in map(Requirement, wanted):
        name = canonicalize_name(spec.name)
        if name == "torch":  # installed from TORCH_SPEC so a CUDA build stays
            assert name not in pins
            continue
        assert name in pins, f"{lock_name} has no pin for {spec}: run `make lock`"
        assert spec.specifier.contains(pins[name], prereleases=True), (
            f"{lock_name} pins {name}=={pins[name]}, but pyproject.toml asks for {spec}: run `make lock`"
        )


def test_the_demo_lock_agrees_with_the_test_lock():
    demo, test = _pins(ROOT / "requirements" / "demo.lock"), _pins(ROOT / "requirements" / "test.lock")
    assert demo.keys() <= test.keys()
    assert {n: v for n, v in demo.items() if test[n] != v} == {}
