"""The dependency lists agree with each other and with what is installed.

pyproject.toml holds the ranges (runtime dependencies and the ``test`` extra), constraints.txt the
exact versions that ``make`` installs and CI tests, environment.yml the same list for conda.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]

# conda-forge names that differ from the PyPI name of the same Python package
CONDA_TO_PYPI = {"python-graphviz": "graphviz", "python-build": "build"}
# conda entries that are not Python packages from pyproject (interpreter, installer, programs)
CONDA_ONLY = {"python", "pip", "graphviz"}
# extras whose packages environment.yml and constraints.txt must cover
EXTRAS = ("test", "hub")


def normalize(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def direct_requirements() -> dict[str, Requirement]:
    """Normalized name -> Requirement for dependencies plus the EXTRAS groups."""
    project = pyproject()["project"]
    lines = list(project["dependencies"])
    for extra in EXTRAS:
        lines += project["optional-dependencies"][extra]
    reqs: dict[str, Requirement] = {}
    for line in lines:
        req = Requirement(line)
        name = normalize(req.name)
        assert name not in reqs, f"{req.name} listed twice in pyproject.toml"
        reqs[name] = req
    return reqs


_CONDA_SPEC = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9_.\-]*)\s*(.*?)\s*$")


def conda_requirements() -> dict[str, SpecifierSet]:
    """Normalized PyPI name -> version range for the Python packages in environment.yml."""
    with open(ROOT / "environment.yml", encoding="utf-8") as f:
        env = yaml.safe_load(f)
    assert "conda-forge" in env.get("channels", []), "environment.yml should use conda-forge"
    out: dict[str, SpecifierSet] = {}

    def add(name: str, spec: str, where: str) -> None:
        key = normalize(name)
        assert key not in out, f"{name} listed twice in environment.yml ({where})"
        out[key] = SpecifierSet(spec)

    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            assert set(entry) == {"pip"}, f"unexpected entry in environment.yml: {entry}"
            for line in entry["pip"]:
                req = Requirement(line)
                add(req.name, str(req.specifier), "pip section")
            continue
        m = _CONDA_SPEC.match(str(entry))
        assert m, f"cannot parse conda spec {entry!r}"
        name, spec = m.group(1).lower(), m.group(2).replace(" ", "")
        if name in CONDA_ONLY:
            continue
        add(CONDA_TO_PYPI.get(name, name), spec, "conda section")
    return out


def constraints() -> dict[str, str]:
    """Normalized name -> exact version from constraints.txt."""
    pins: dict[str, str] = {}
    for n, raw in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9_.\-]*)==([A-Za-z0-9_.+!\-]+)", line)
        assert m, f"constraints.txt:{n}: not an exact pin (name==version): {raw!r}"
        name = normalize(m.group(1))
        assert name not in pins, f"constraints.txt:{n}: {m.group(1)} pinned twice"
        Version(m.group(2))  # raises InvalidVersion for a malformed version
        pins[name] = m.group(2)
    return pins


# --- pyproject.toml --------------------------------------------------------------------------

def test_pyproject_metadata():
    data = pyproject()
    project = data["project"]
    assert project["name"] == "vmkit"
    assert SpecifierSet(project["requires-python"]) == SpecifierSet(">=3.11")
    assert project["scripts"]["vmkit"] == "vmkit.cli:main"
    assert "*.s" in data["tool"]["setuptools"]["package-data"]["vmkit.guests"]
    for name in ("capstone", "ipywidgets", "ipykernel", "jupyterlab", "graphviz", "nbval",
                 "matplotlib", "nbclient", "nbconvert", "nbformat",
                 "pytest", "pytest-xdist", "unicorn", "playwright"):
        assert name in direct_requirements(), f"{name} missing from pyproject.toml"


def test_pyproject_ranges_are_bounded():
    """Every direct dependency has a lower and an upper bound (a compatible range)."""
    for name, req in direct_requirements().items():
        ops = {spec.operator for spec in req.specifier}
        assert ops & {">=", ">", "~=", "=="}, f"{name}: no lower bound in {req}"
        assert ops & {"<", "<=", "~=", "=="}, f"{name}: no upper bound in {req}"


# --- environment.yml -------------------------------------------------------------------------

def test_environment_yml_lists_every_pyproject_dependency():
    conda = conda_requirements()
    missing = sorted(set(direct_requirements()) - set(conda))
    assert not missing, f"in pyproject.toml but not in environment.yml: {missing}"


def test_pyproject_lists_every_environment_yml_package():
    extra = sorted(set(conda_requirements()) - set(direct_requirements()))
    assert not extra, f"in environment.yml but not in pyproject.toml: {extra}"


def test_environment_yml_ranges_match_pyproject():
    conda = conda_requirements()
    differ = {name: (str(req.specifier), str(conda[name]))
              for name, req in direct_requirements().items()
              if name in conda and req.specifier != conda[name]}
    assert not differ, f"ranges differ (pyproject, environment.yml): {differ}"


# --- constraints.txt -------------------------------------------------------------------------

def test_constraints_pin_every_direct_dependency():
    pins = constraints()
    missing = sorted(set(direct_requirements()) - set(pins))
    assert not missing, f"direct dependencies not pinned with == in constraints.txt: {missing}"
    assert "vmkit" not in pins, "constraints.txt must not pin vmkit itself"


def test_constraints_satisfy_pyproject_ranges():
    pins = constraints()
    bad = {name: (pins[name], str(req.specifier))
           for name, req in direct_requirements().items()
           if name in pins and not req.specifier.contains(pins[name], prereleases=True)}
    assert not bad, f"pins outside pyproject's ranges (pin, range): {bad}"


def test_constraints_pin_the_semester_engines():
    """Capstone 5.0.x spells instructions as the kit expects; the oracle is unicorn 2.1.x."""
    pins = constraints()
    assert Version(pins["capstone"]).release[:2] == (5, 0)
    assert Version(pins["unicorn"]).release[:2] == (2, 1)


def test_installed_versions_match_constraints():
    """The interpreter running the tests has exactly the pinned direct dependencies.

    Set VMKIT_ALLOW_UNPINNED=1 to skip this outside `make` (e.g. in a conda environment).
    """
    if os.environ.get("VMKIT_ALLOW_UNPINNED"):
        pytest.skip("VMKIT_ALLOW_UNPINNED is set")
    pins = constraints()
    wrong = {}
    for name in direct_requirements():
        try:
            installed = md.version(name)
        except md.PackageNotFoundError:
            installed = None
        if name in pins and installed != pins[name]:
            wrong[name] = (installed, pins[name])
    assert not wrong, f"installed vs constraints.txt (run `make venv`): {wrong}"


# --- the installed command -------------------------------------------------------------------

def test_console_script_is_installed():
    try:
        dist = md.distribution("vmkit")
    except md.PackageNotFoundError:
        pytest.fail("vmkit is not installed (run `make venv`)")
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts.get("vmkit") == "vmkit.cli:main"


@pytest.mark.parametrize("argv", [
    ["--help"], ["asm", "--help"], ["run", "--help"], ["classify", "--help"],
    ["compare", "--help"], ["release", "--help"], ["grade", "--help"],
])
def test_every_command_has_help(argv, capsys):
    from vmkit.cli import main

    assert main(argv) == 0
    assert "usage: vmkit" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["no-such-command"], ["run"], ["asm"],
                                  ["run", "hello", "--monitor", "nope"]])
def test_bad_usage_is_one_line_and_nonzero(argv, capsys):
    from vmkit.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
