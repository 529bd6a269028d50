"""Does every module keep to its layer (DESIGN.md "Layers, bottom up")?

The contracts live in pyproject.toml (``[tool.importlinter]``) and import-linter checks them:
isa < machine | guests < vmm < viz < widgets < cli, isa and trace know nothing above them,
nothing below viz draws, homework imports none of the simulator, the modules of vmm import
each other without cycles. Today's exceptions are listed there (``ignore_imports``); each must
go as the monitors' redesign lands, and ``EXCEPTIONS`` below counts down with them.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: contract id -> the number of exceptions it lists today (the redesign brings each to 0)
EXCEPTIONS = {"layers": 0, "vmm-acyclic": 0}

#: ignore_imports that are not exceptions: vmkit/__init__.py's lazy attributes (imported only
#: inside its __getattr__) seen by a static import graph
NOT_EXCEPTIONS = {"homework": ["vmkit -> vmkit.**"]}


def _config() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["importlinter"]


def test_the_layers_are_kept():
    """lint-imports over vmkit with the contracts of pyproject.toml: every one kept (a
    listed exception that no longer exists breaks its contract too)."""
    pytest.importorskip("importlinter")
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, "
            "no_logo=True))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def test_the_contracts_cover_design_md():
    """The rules of DESIGN.md and of the redesign issue are all there."""
    cfg = _config()
    assert cfg["root_package"] == "vmkit"
    contracts = {c["id"]: c for c in cfg["contracts"]}
    assert contracts["layers"]["layers"] == ["cli", "widgets", "viz", "vmm", "guests | machine",
                                             "isa"]
    assert {"vmkit.trace", "vmkit.homework"} <= set(contracts["isa"]["forbidden_modules"])
    assert {"vmkit.vmm", "vmkit.machine", "vmkit.isa"} <= set(
        contracts["trace"]["forbidden_modules"])
    assert {"vmkit.widgets", "vmkit.viz", "vmkit.vmm"} <= set(
        contracts["homework"]["forbidden_modules"])
    assert {"ipywidgets", "graphviz", "matplotlib"} <= set(
        contracts["no-drawing-below-viz"]["forbidden_modules"])
    assert "vmkit.vmm" in contracts["no-drawing-below-viz"]["source_modules"]
    assert contracts["vmm-acyclic"]["ancestors"] == ["vmkit.vmm"]
    # the headless debugger: above vmm and trace, below viz and widgets (DESIGN.md)
    assert {"vmkit.viz", "vmkit.widgets", "ipywidgets", "graphviz"} <= set(
        contracts["debug"]["forbidden_modules"])
    assert {"vmkit.vmm", "vmkit.machine", "vmkit.trace"} <= set(
        contracts["below-debug-core"]["source_modules"])
    assert contracts["below-debug-core"]["forbidden_modules"] == ["vmkit.debug"]


def test_exceptions_are_counted():
    """Each listed exception is counted here; removing one means lowering its count."""
    contracts = {c["id"]: c for c in _config()["contracts"]}
    found = {}
    for cid, c in contracts.items():
        ignored = [i for i in c.get("ignore_imports", []) if i not in NOT_EXCEPTIONS.get(cid, [])]
        if ignored:
            found[cid] = len(ignored)
    assert found == {k: v for k, v in EXCEPTIONS.items() if v}, (
        "the exceptions in pyproject.toml changed: update EXCEPTIONS (it only goes down)")


def test_results_find_their_pictures_through_the_registry():
    """Do vmm's results get their pictures and HTML tables from viz through the display
    registry (vmm imports no viz), and does a display nobody registered fail with a one-line
    error?"""
    from vmkit.errors import VmkitError
    from vmkit.vmm import display
    registered = display.displays()
    assert {("Comparison", "plot"), ("MemoryComparison", "plot"),
            ("IOComparison", "plot"), ("Comparison", "html"), ("ClassificationTable", "html"),
            ("IOComparison", "html")} <= set(registered)
    assert all(fn.__module__ in ("vmkit.viz.displays", "vmkit.viz.results")
               for fn in registered.values())

    class Result:
        pass
    with pytest.raises(VmkitError, match="no 'plot' display is registered for Result"):
        display.draw(Result(), "plot")


def test_one_registry_of_monitor_names():
    """Do compare, the memory comparison, the command line and vmkit.vmm.MONITORS all take
    their monitors from the one registry, and does an unknown name say which exist?"""
    from vmkit import cli, vmm
    from vmkit.errors import VmkitError
    from vmkit.vmm import memory, registry
    from vmkit.vmm.compare import monitor_factories
    assert vmm.MONITORS is registry.MONITORS
    assert cli.MONITORS == tuple(registry.MONITORS)
    assert all(cls.name == name for name, cls in registry.MONITORS.items())
    factories = monitor_factories()
    assert all(factories[n] is c for n, c in registry.MONITORS.items())
    assert factories["hw-shadow"] is registry.VARIANTS["hw-shadow"]
    mm = memory.memory_monitors()
    assert mm["hw-ept"] is registry.VARIANTS["hw-ept"] and mm["te"] is vmm.TrapAndEmulate
    with pytest.raises(VmkitError, match="unknown monitor 'hw-shadw'.*did you mean 'hw-shadow'"):
        registry.factory("hw-shadw")
