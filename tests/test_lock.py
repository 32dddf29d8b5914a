"""The lock is the tested set: every range the project declares must admit the locked version.

A range bumped in pyproject.toml or requirements-eval-cpu.txt without `make lock` fails here, not on a user's
fresh machine. The lock itself must pin exactly (name==version, nothing floating) and must not hold torch,
which each machine installs for itself (CPU or CUDA) before the lock.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def lock() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "requirements-lock.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = PIN.match(line.strip())
        assert match, f"requirements-lock.txt: {line!r} is not an exact name==version pin"
        pins[canonicalize_name(match[1])] = Version(match[2])
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    lines += [
        line.strip()
        for line in (ROOT / "requirements-eval-cpu.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return [Requirement(line) for line in lines]


def test_lock_pins_exactly_and_leaves_torch_to_the_machine():
    pins = lock()
    assert "torch" not in pins and "fastervlm" not in pins
    assert {"lmms-eval", "filelock", "transformers", "pytest", "ruff", "pip", "setuptools"} <= set(pins)


def default_torch() -> Version:
    """The torch scripts/setup_env.sh installs before the lock unless TORCH_SPEC says otherwise."""
    match = re.search(r"TORCH_SPEC:-torch==([0-9.]+)", (ROOT / "scripts" / "setup_env.sh").read_text())
    assert match, "scripts/setup_env.sh no longer names its default torch as TORCH_SPEC:-torch==X.Y.Z"
    return Version(match[1])


@pytest.mark.parametrize("requirement", declared(), ids=str)
def test_every_declared_range_admits_the_locked_version(requirement: Requirement):
    name = canonicalize_name(requirement.name)
    pins = {**lock(), "torch": default_torch()}
    assert name in pins, f"{requirement} is declared but not in requirements-lock.txt: run `make lock`"
    assert requirement.specifier.contains(pins[name], prereleases=True), (
        f"{requirement} does not admit the locked {name}=={pins[name]}: run `make lock`"
    )


def test_the_lock_keeps_lmms_eval_on_a_filelock_it_can_import():
    """lmms-eval 0.7.3's evaluator imports filelock._api, which filelock 4.0 removed."""
    assert lock()["filelock"] < Version("4")
