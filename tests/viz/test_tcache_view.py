"""The translation-cache pictures (vmkit.viz.tcache) and TranslationCacheView, without a kernel."""

import pytest

from vmkit import guests
from vmkit.viz.render import diagram_svg, figure_svg
from vmkit.viz.tcache import (TC_SCALE, block_runs, hit_rate_series, record_lookups, tc_diagram,
                              tc_hit_rate_figure, tc_stats_html)
from vmkit.vmm import BinaryTranslation
from vmkit.vmm.bt import DEFAULT_THRESHOLD
from vmkit.widgets import TranslationCacheView


@pytest.fixture(scope="module")
def syscall_bt():
    vm = BinaryTranslation(guests.build("syscall"))
    lookups = record_lookups(vm)
    vm.run(max_steps=5_000_000)
    return vm, lookups


def test_diagram_has_a_node_per_block_and_chaining_edges(syscall_bt):
    vm, _ = syscall_bt
    blocks = vm.blocks()
    g = tc_diagram(vm, max_blocks=len(blocks))
    assert blocks and vm.stats["chained"] > 0
    for b in blocks:
        assert f"b{b.vm}_{b.eip:08x} [" in g.source
        assert f"{b.eip:#010x}–{b.end - 1:#010x}" in g.source
    links = sum(1 for b in blocks for n in b.links.values() if n.valid)
    assert links > 0 and g.source.count(" -> ") == links
    assert "runs from the cache" in g.source and all(c in g.source for c in TC_SCALE)
    assert 'pack=true packmode="graph"' in g.source     # chains tile, not side by side
    assert f"threshold N = {DEFAULT_THRESHOLD}" in g.title
    assert "ends in callout: iretd" in g.source
    svg = diagram_svg(g)
    assert "<svg" in svg and "<title>Translation cache" in svg


def test_only_the_hottest_blocks_are_drawn_by_default_and_the_title_says_so(syscall_bt):
    vm, _ = syscall_bt
    blocks = vm.blocks()
    assert len(blocks) > 20
    g = tc_diagram(vm)
    drawn = [b for b in blocks if f"b{b.vm}_{b.eip:08x} [" in g.source]
    assert len(drawn) == 20
    assert min(map(block_runs, drawn)) >= max(block_runs(b) for b in blocks if b not in drawn)
    assert f"({len(blocks)} blocks; the 20 hottest shown)" in g.title


def test_hot_blocks_are_coloured_by_runs(syscall_bt):
    vm, _ = syscall_bt
    hot = max(vm.blocks(), key=block_runs)
    assert block_runs(hot) >= 1000     # the system-call path runs once per call
    assert sum(b.hits for b in vm.blocks()) <= vm.stats["tc_hits"]
    assert sum(b.chained_in for b in vm.blocks()) <= vm.stats["chained"]
    src = tc_diagram(vm).source
    assert TC_SCALE[3] in src and TC_SCALE[0] in src


def test_hit_rate_series_and_figure(syscall_bt):
    vm, lookups = syscall_bt
    assert len(lookups) == vm.stats["tc_lookups"]
    xs, cum, win = hit_rate_series(lookups)
    assert xs == sorted(xs) and len(xs) == len(cum) == len(win)
    assert cum[-1] == pytest.approx(vm.stats["tc_hits"] / vm.stats["tc_lookups"])
    svg1 = figure_svg(tc_hit_rate_figure(lookups))
    svg2 = figure_svg(tc_hit_rate_figure(lookups))
    assert svg1 == svg2 and "hit rate" in svg1
    assert "hit rate" in tc_stats_html(vm)


def test_empty_cache_draws():
    vm = BinaryTranslation(guests.build("hello"))
    assert "no translations yet" in tc_diagram(vm).source
    assert "<svg" in figure_svg(tc_hit_rate_figure([]))


def test_slider_reruns_with_the_new_threshold():
    view = TranslationCacheView(guests.build("syscall"), threshold=3)
    first = view.monitor
    assert first.threshold == 3
    t3 = first.stats["translations"]
    view.slider.value = 12
    assert view.monitor is not first and view.monitor.threshold == 12
    assert view.monitor.stats["translations"] != t3
    assert set(view.runs) == {3, 12}
    assert "N = 12" in view.diagram_view.value and "<svg" in view.figure_view.value
    assert "blocks translated" in view.stats_view.value


def test_factory_and_static_bundle():
    img = guests.build("selfmod")
    view = TranslationCacheView(lambda n: BinaryTranslation(img, threshold=n), threshold=2)
    assert view.monitor.stats["tc_invalidations"] > 0
    bundle = view._repr_mimebundle_()
    assert "<svg" in bundle["text/html"] and bundle["image/svg+xml"].lstrip().startswith("<")
    assert "vmkit-tcache-view" in bundle["text/html"]
