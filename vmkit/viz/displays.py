"""The displays of vmm's results, registered with :mod:`vmkit.vmm.display`: vmm's
experiments return data, and their ``plot()`` finds its picture here. matplotlib is imported
only when a picture is asked for."""

from __future__ import annotations

from vmkit.viz import results  # noqa: F401  the results' HTML registers itself
from vmkit.vmm import display

__all__ = []


@display.register("Comparison", "plot")
def _comparison(result, **kwargs):
    from vmkit.viz.costs import comparison_figure
    return comparison_figure(result, **kwargs)


@display.register("MemoryComparison", "plot")
def _memory_comparison(result, **kwargs):
    from vmkit.viz.memory import memory_comparison_figure
    return memory_comparison_figure(result, **kwargs)


@display.register("IOComparison", "plot")
def _io_comparison(result, **kwargs):
    from vmkit.viz.iovirt import io_comparison_figure
    return io_comparison_figure(result, **kwargs)
