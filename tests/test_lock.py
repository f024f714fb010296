"""The lock (requirements/*.txt) covers what pyproject.toml asks for, with hashes.

The README's commands install the lock with --require-hashes and mailgw with
--no-deps, so a dependency added to pyproject.toml but not to the lock would
only show as an ImportError somewhere; these tests say it at once. With
MAILGW_REQUIRE_LOCKED=1 (set by .ci/run) they also check that the environment
running the suite is the locked one.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def lock(name: str) -> dict[str, tuple[str, int]]:
    """{canonical name: (version, number of hashes)} of one lock file."""
    pins: dict[str, tuple[str, int]] = {}
    current = None
    for line in (REPO / "requirements" / name).read_text().splitlines():
        m = _PIN.match(line)
        if m:
            current = canonicalize_name(m.group(1))
            pins[current] = (m.group(2), 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
        elif not line.startswith(" "):
            current = None
    return pins


def requirements(*, extra: str | None = None) -> list[Requirement]:
    found = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    found += [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    if extra:
        found += [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"][extra]]
    return [r for r in found if r.marker is None or r.marker.evaluate()]


@pytest.mark.parametrize("name, extra", [("serve.txt", None), ("test.txt", "test")])
def test_the_lock_pins_every_requirement_within_its_bounds_with_hashes(name, extra):
    pins = lock(name)
    for req in requirements(extra=extra):
        key = canonicalize_name(req.name)
        assert key in pins, f"requirements/{name} lacks {req.name}: run scripts/upgrade-deps"
        version, hashes = pins[key]
        assert req.specifier.contains(version, prereleases=True), \
            f"requirements/{name} pins {req.name}=={version}, outside {req.specifier}: run scripts/upgrade-deps"
    unhashed = sorted(n for n, (_, hashes) in pins.items() if hashes == 0)
    assert not unhashed, f"requirements/{name}: pins without a hash: {unhashed}"


def test_serving_and_testing_use_the_same_versions():
    serve, test = lock("serve.txt"), lock("test.txt")
    assert set(serve) <= set(test)
    assert {n: v for n, (v, _) in serve.items()} == {n: test[n][0] for n in serve}


@pytest.mark.skipif(os.environ.get("MAILGW_REQUIRE_LOCKED") != "1",
                    reason="only where the locked set must be the one installed (MAILGW_REQUIRE_LOCKED=1, as in .ci/run)")
def test_the_suite_runs_on_the_locked_set():
    wrong = {}
    for name, (version, _) in lock("test.txt").items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (version, installed)
    assert not wrong, f"locked vs installed: {wrong}"
