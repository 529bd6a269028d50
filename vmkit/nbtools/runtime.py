"""What a notebook imports when it runs: its first cell calls :func:`notebook_setup`.

Cheap and self-contained: matplotlib (when a plot needs it) and IPython, nothing from
nbconvert, nbclient or the slide builder, and no file of the course material, so it works the
same from a checkout and from an installed kit.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

__all__ = ["SVG_HASHSALT", "YOUNG_COLLECTION_THRESHOLD", "notebook_setup", "install_error_display",
           "release_memory_after_cells", "collect_less_often"]

SVG_HASHSALT = "vmkit"


def notebook_setup() -> None:
    """Make this kernel's pictures repeatable; call it in a notebook's first cell.

    Matplotlib figures come out as SVG with fixed ids (``svg.hashsalt``) and without the date
    in their metadata. Matplotlib is configured when something first imports it (at once if
    it is already imported): a notebook that draws no plot does not load it (about 40 MiB of
    a kernel's memory, issue 19). Imports nothing from nbconvert. In a kernel, the kit's
    errors are shown in one line, freed memory is given back after every cell that made a
    machine, and Python's collector looks at young objects less often
    (:func:`collect_less_often`).
    """
    if "matplotlib" in sys.modules:
        _configure_matplotlib()
    else:
        _after_import("matplotlib", _configure_matplotlib)
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        return
    if get_ipython() is None:
        return
    install_error_display(get_ipython())
    release_memory_after_cells(get_ipython())
    collect_less_often()


def _configure_matplotlib() -> None:
    import matplotlib

    matplotlib.rcParams["svg.hashsalt"] = SVG_HASHSALT
    matplotlib.rcParams["svg.fonttype"] = "path"  # glyphs as paths: no font lookup by viewers
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return
    if get_ipython() is None:
        return
    from matplotlib_inline.backend_inline import set_matplotlib_formats

    set_matplotlib_formats("svg", bbox_inches="tight", metadata={"Date": None})
    # The kit's figures (vmkit.viz.render.SvgFigure) draw themselves, once, in their own
    # bundle (cropped the same way, with their title). The inline backend's SVG printer,
    # registered for every Figure, would win over that bundle: a second drawing (two passes:
    # the tight crop measures first) whose copy is the one shown, without the title. A printer
    # that answers None for the kit's figures leaves their bundle's SVG in place.
    svg = get_ipython().display_formatter.formatters["image/svg+xml"]
    svg.for_type_by_name("vmkit.viz.render", "SvgFigure", _own_svg)


def _own_svg(_fig):
    """The SVG printer for the kit's figures in a set-up kernel: none (their own bundle's)."""
    return None


class _ThenLoader(importlib.abc.Loader):
    """A module's own loader, then ``then()`` once the module has run."""

    def __init__(self, loader, then):
        self.loader, self.then = loader, then

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader   # its own, for resources
        self.loader.exec_module(module)
        self.then()


class _AfterImport(importlib.abc.MetaPathFinder):
    """Call ``then()`` right after module ``name`` is first imported (once)."""

    def __init__(self, name, then):
        self.name, self.then = name, then

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _ThenLoader(spec.loader, self.then)
        return spec


def _after_import(name: str, then) -> None:
    for f in sys.meta_path:
        if isinstance(f, _AfterImport) and f.name == name:
            return                      # notebook_setup() run twice: once is enough
    sys.meta_path.insert(0, _AfterImport(name, then))


#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def release_memory_after_cells(shell) -> bool:
    """Give freed memory back to the system after every cell (Linux with glibc; elsewhere
    nothing changes). Returns whether it could.

    Two things kept a lecture kernel's resident memory far above what it uses (issue 19):
    glibc raises its mmap threshold whenever a large block is freed, so after the first
    guest's memory (4-6 MiB) is freed every later one comes from the heap, where freed
    guests stay resident; and freed heap is returned only from its top. A fixed threshold
    (128 KiB, glibc's default start) keeps every guest's memory in its own mapping, returned
    when the monitor goes; after each cell that made a machine, a garbage collection frees
    the monitors dropped since the last one (they are reference cycles, which Python's
    collector would reach only much later) and ``malloc_trim(0)`` returns the rest (a few ms
    each). Notebook 03 after Run All: 281 MiB resident before, 211 MiB after
    (benchmarks/bench_notebook_memory.py)."""
    import ctypes
    import gc
    import sys as _sys
    if not _sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        trim = libc.malloc_trim
        libc.mallopt(_M_MMAP_THRESHOLD, 128 << 10)
        libc.mallopt(_M_TRIM_THRESHOLD, 128 << 10)
    except (OSError, AttributeError):   # another C library (musl): leave it as it is
        return False

    def release(*_args):
        made = _machines_made()
        if release.frozen and made == release.made:
            # No machine was made since the last collection, so no guest memory can have
            # become garbage but a monitor dropped without a new one (``del te``): that one
            # goes at the next collection here or by Python's own. A full collection walks
            # every object the lecture holds (20-70 ms a cell in notebooks 03-09; a third of
            # cells make no machine).
            return
        release.made = made
        gc.collect()    # monitors are reference cycles (machine <-> hooks): free them now
        if not release.frozen:
            # The first cell is the setup cell (notebook_setup and the imports): what lives
            # now lives as long as the kernel (IPython, the kit's modules, numpy: about
            # 170,000 objects), so it leaves the collector's view (gc.freeze). Each later
            # collection then walks only what the lecture made since: it took 100-500 ms
            # a cell, a third of notebook 01's time, and now takes a few ms.
            gc.freeze()
            release.frozen = True
        trim(0)

    release.frozen = False
    release.made = 0

    if not getattr(shell, "_vmkit_releases_memory", False):   # once per kernel
        shell.events.register("post_run_cell", release)
        shell._vmkit_releases_memory = True
    return True


#: how many new container objects a kernel set up by notebook_setup makes between two looks of
#: the collector at its youngest generation (Python's default: 700)
YOUNG_COLLECTION_THRESHOLD = 20_000


def collect_less_often() -> None:
    """Let Python's collector look at its youngest objects every
    :data:`YOUNG_COLLECTION_THRESHOLD` new containers instead of every 700 (in a kernel, from
    :func:`notebook_setup`).

    The kit's runs make many short-lived containers (events, tuples, the frames of compiled
    code); those alive at a look are promoted, until enough of them set off a full
    collection, which walks every object the lecture holds (matplotlib alone is ~54,000).
    At 20,000 the lecture notebooks collect a third less: notebook 08 1.85 -> 1.14 s CPU in
    the collector (15 -> 6 full collections), 03 0.86 -> 0.45 s. Cyclic garbage waits a
    little longer; guests are still freed after every cell that made one
    (:func:`release_memory_after_cells`)."""
    import gc
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])


def _machines_made() -> int:
    """How many machines the kit has made in this process (0 before it made any)."""
    mod = sys.modules.get("vmkit.machine.machine")
    return mod.machines_made() if mod is not None else 0


def install_error_display(shell) -> None:
    """Show the kit's own errors (``VmkitError``: bad assembly, an unknown guest, a wrong
    parameter ...) as one short message that says what and where, instead of a deep traceback
    through the kit's internals. Other exceptions keep IPython's usual traceback."""
    from vmkit.errors import VmkitError

    def show(shell, etype, evalue, tb, tb_offset=None):
        import sys as _sys
        # IPython has already counted the cell that failed: its number is one less
        count = (getattr(shell, "execution_count", 1) or 1) - 1
        where = f" (in cell [{count}])" if count > 0 else ""
        print(f"{etype.__name__}{where}: {evalue}", file=_sys.stderr)
        return None

    shell.set_custom_exc((VmkitError,), show)

