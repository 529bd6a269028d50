"""Do the debugger's live tables (``vmkit.viz.live``) fit a laptop's notebook in both themes?

Every table is rendered into a page 1,366 px wide whose output column is as wide as
JupyterLab's with the file browser open (~900 px), with JupyterLab's light and dark theme
variables; each table must fit that column without a horizontal scroll bar, and its text must
differ in colour from its background. Screenshots: build/test-artifacts/live-tables-*.png.
"""

from __future__ import annotations

import pytest

from browser_util import chromium_context, require_chromium, screenshot

#: JupyterLab's theme variables the tables use (light, dark)
THEMES = {
    "light": {"--jp-content-font-color1": "rgba(0,0,0,0.87)",
              "--jp-content-font-color2": "rgba(0,0,0,0.54)",
              "--jp-border-color2": "#e0e0e0", "--jp-layout-color2": "#eeeeee",
              "--jp-layout-color0": "#ffffff"},
    "dark": {"--jp-content-font-color1": "rgba(255,255,255,1)",
             "--jp-content-font-color2": "rgba(255,255,255,0.7)",
             "--jp-border-color2": "#616161", "--jp-layout-color2": "#424242",
             "--jp-layout-color0": "#111111"},
}
COLUMN = 900    # px: a notebook's output area at 1366 px with the file browser open


def _tables() -> list:
    from vmkit import guests
    from vmkit.viz import live
    from vmkit.vmm import BinaryTranslation, HardwareAssisted, TrapAndEmulate
    te = TrapAndEmulate(guests.build("ptemod", iterations=2))
    te.run(max_steps=9000)
    hw = HardwareAssisted(guests.build("ptemod", iterations=2))
    hw.run(max_steps=9000)
    bt = BinaryTranslation(guests.build("hello"))
    bt.run(max_steps=8000)
    return [live.descriptor_table(te, "gdt", real=True), live.descriptor_table(te, "idt"),
            live.tss_table(te, real=True), live.walk_table(te, 0x400000),
            live.walk_table(hw, 0x400000), live.hex_view(te, 0x2080, 128,
                                                          watched=[(0x20a4, 4)]),
            live.vmcs_table(hw), live.tc_block_table(bt, bt.blocks()[0].eip),
            live.hits_table(_watch_hits())]


def _watch_hits() -> list:
    """The Stepper's hits table's content: a watchpoint on a guest PTE under te (the
    guest's writes and the VMM's)."""
    from vmkit import Debugger, guests
    from vmkit.vmm import TrapAndEmulate
    d = Debugger(TrapAndEmulate(guests.build("ptemod", iterations=2)))
    d.watch(0x201000, physical=True)
    return [d.cont() for _ in range(3)]


@pytest.mark.parametrize("theme", list(THEMES))
def test_live_tables_fit_and_read_in_both_themes(theme):
    require_chromium()
    tables = _tables()
    css = ";".join(f"{k}:{v}" for k, v in THEMES[theme].items())
    body = "".join(f'<div class="out" style="margin:8px 0">{t.to_html()}</div>' for t in tables)
    page_html = (f'<html><body style="{css};background:var(--jp-layout-color0);'
                 f'color:var(--jp-content-font-color1);margin:0">'
                 f'<div style="width:{COLUMN}px;margin-left:300px">{body}</div></body></html>')
    with chromium_context(viewport={"width": 1366, "height": 768}) as ctx:
        page = ctx.new_page()
        page.set_content(page_html)
        sizes = page.eval_on_selector_all(
            ".vmkit-table", "els => els.map(e => [e.className, e.scrollWidth, e.clientWidth,"
            " e.querySelector('table').getBoundingClientRect().width])")
        colours = page.eval_on_selector_all(
            ".vmkit-table td", "els => els.slice(0, 40).map(e => [getComputedStyle(e).color,"
            " getComputedStyle(e).backgroundColor])")
        screenshot(page, f"live-tables-{theme}")
    assert len(sizes) == len(tables)
    for cls, scroll, client, width in sizes:
        assert scroll <= client and width <= COLUMN, (cls, scroll, client, width)
    assert all(fg != bg for fg, bg in colours)
