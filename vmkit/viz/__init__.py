"""Pictures and tables: pure functions from traces and monitors to ``graphviz.Digraph``,
matplotlib figures and HTML.

>>> from vmkit.viz import ring_diagram, ring_timeline, registers_html
>>> ring_diagram(vm)                 # doctest: +SKIP   (rings, who runs where, transitions)
>>> ring_timeline(vm.trace)          # doctest: +SKIP   (ring over guest time)

Nothing here changes a monitor or a machine; widgets (:mod:`vmkit.widgets`) compose these.
"""

from vmkit.viz.html import (DisasmRow, console_html, describe_event, disassembly_html,
                            disassembly_rows, events_html, flag_values, flags_html,
                            register_values, registers_html, source_line)
from vmkit.viz.render import (INSTALL_HINT, OKABE_ITO, Diagram, diagram_html, diagram_svg,
                              figure_html, figure_svg)
from vmkit.viz.rings import ring_diagram, ring_layout, transition_counts
from vmkit.viz.memory import (TranslationWalk, memory_comparison_figure, translation_diagram,
                              translation_walk)
from vmkit.viz.tcache import (hit_rate_series, record_lookups, tc_diagram, tc_hit_rate_figure,
                              tc_stats_html)

__all__ = ["registers_html", "register_values", "flags_html", "flag_values",
           "disassembly_html", "disassembly_rows", "DisasmRow", "source_line", "events_html",
           "describe_event", "console_html", "ring_diagram", "ring_layout",
           "transition_counts", "ring_timeline", "timeline_svg", "Diagram", "diagram_svg",
           "diagram_html", "figure_svg", "figure_html", "OKABE_ITO", "INSTALL_HINT",
           "tc_diagram", "tc_hit_rate_figure", "tc_stats_html", "record_lookups",
           "hit_rate_series", "exits_figure", "exits_table_html", "exit_rows", "exit_cycles",
           "qualification_text", "vm_timeline", "sharing_figure", "translation_diagram",
           "translation_walk", "TranslationWalk", "memory_comparison_figure",
           "LiveTable", "descriptor_table", "tss_table", "walk_table", "hex_view", "vmcs_table",
           "tc_block_table"]


def __getattr__(name):  # matplotlib is imported only when a timeline is asked for
    if name in ("comparison_figure", "per_operation_figure", "category_style"):
        from vmkit.viz import costs
        return getattr(costs, name)
    if name in ("ring_timeline", "timeline_svg", "ring_series"):
        from vmkit.viz import timeline
        return getattr(timeline, name)
    if name in ("exits_figure", "exits_table_html", "exit_rows", "exit_cycles",
                "qualification_text"):
        from vmkit.viz import exits
        return getattr(exits, name)
    if name in ("vm_timeline", "sharing_figure", "vm_intervals"):
        from vmkit.viz import vmtimeline
        return getattr(vmtimeline, name)
    if name in ("LiveTable", "descriptor_table", "tss_table", "walk_table", "hex_view",
                "vmcs_table", "tc_block_table"):   # the debugger's live tables
        from vmkit.viz import live
        return getattr(live, name)
    raise AttributeError(f"module 'vmkit.viz' has no attribute {name!r}")
