"""What a notebook imports when it runs: its first cell calls :func:`notebook_setup`.

Cheap and self-contained: matplotlib and IPython (both there in any kernel), nothing from
nbconvert, nbclient or the slide builder, and no file of the course material, so it works the
same from a checkout and from an installed kit.
"""

from __future__ import annotations

__all__ = ["SVG_HASHSALT", "notebook_setup", "install_error_display", "release_memory_after_cells"]

SVG_HASHSALT = "vmkit"


def notebook_setup() -> None:
    """Make this kernel's pictures repeatable; call it in a notebook's first cell.

    Matplotlib figures come out as SVG with fixed ids (``svg.hashsalt``) and without the date
    in their metadata. Cheap: imports matplotlib and nothing from nbconvert.
    """
    import matplotlib

    matplotlib.rcParams["svg.hashsalt"] = SVG_HASHSALT
    matplotlib.rcParams["svg.fonttype"] = "path"  # glyphs as paths: no font lookup by viewers
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        return
    if get_ipython() is None:
        return
    from matplotlib_inline.backend_inline import set_matplotlib_formats

    set_matplotlib_formats("svg", bbox_inches="tight", metadata={"Date": None})
    install_error_display(get_ipython())
    release_memory_after_cells(get_ipython())


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
    when the monitor goes, and ``malloc_trim(0)`` after each cell returns the rest (a few
    ms). Notebook 03 after Run All: 281 MiB resident before, 211 MiB after
    (benchmarks/bench_notebook_memory.py)."""
    import ctypes
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
        trim(0)

    if not getattr(shell, "_vmkit_releases_memory", False):   # once per kernel
        shell.events.register("post_run_cell", release)
        shell._vmkit_releases_memory = True
    return True


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

