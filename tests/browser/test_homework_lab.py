"""Exercises as a student meets them in JupyterLab (chromium)."""

from __future__ import annotations

import json
import platform
import shutil
import time
from pathlib import Path

import pytest

from browser_util import chromium_context, require_chromium, screenshot

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["hw01-rings-and-traps.ipynb"])
def test_opening_an_exercise_leaves_it_unmodified(tmp_path, name):
    """Does an exercise opened in JupyterLab (its kernel started and idle) stay unmodified?
    (JupyterLab writes the kernel's language_info into the notebook: release keeps it whole.)"""
    require_chromium()
    from test_browser import JupyterLab

    stored = json.loads((ROOT / "exercises" / name).read_text())["metadata"]["language_info"]
    if stored.get("version") != platform.python_version():
        pytest.skip(f"the exercises record Python {stored.get('version')}; this is "
                    f"{platform.python_version()}")
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(ROOT / "exercises" / name, root / name)
    lab = JupyterLab(root, tmp_path)
    try:
        with chromium_context() as ctx:
            page = ctx.new_page()
            page.goto(lab.url(name), timeout=60_000)
            page.wait_for_selector(".jp-Notebook", timeout=60_000)
            page.wait_for_function("""() => {
                const w = window.jupyterapp.shell.currentWidget;
                const k = w && w.sessionContext && w.sessionContext.session
                          && w.sessionContext.session.kernel;
                return k && k.status === 'idle'; }""", timeout=60_000)
            time.sleep(3)  # what the kernel's info changes comes right after it is idle
            dirty = page.evaluate("() => window.jupyterapp.shell.currentWidget.context.model"
                                  ".dirty")
            screenshot(page, f"exercise-opened-{name}")
    finally:
        lab.stop()
    assert dirty is False
