"""The paging-mode interface (after Xen's ``struct paging_mode``, xen/arch/x86/mm/paging.c): what a
monitor asks of the way it virtualizes the guest's memory, and the registry that turns a mode's
name into one.

A monitor holds one mode, ``monitor.paging``, chosen by name when it is made
(``TrapAndEmulate(img, paging="vtlb")``, ``HardwareAssisted(img, paging="ept")``). The monitor
keeps the guest's control registers where its virtual CPU keeps them and tells the mode what
happened; the mode keeps the structures the real MMU walks (shadow tables, the EPT, the guest's
own validated tables) and says what a fault means. A new mode is a new module with a subclass of
:class:`PagingMode` and a :func:`register` call (docs/architecture.md, "Adding a paging mode").
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from vmkit.errors import VmkitError

__all__ = ["PagingMode", "PagingView", "HIDDEN", "EMULATE", "GUEST", "MODES", "register",
           "mode_class", "select", "shadow_choice"]

#: :meth:`PagingMode.page_fault` outcomes: the mode handled the fault itself (the guest
#: retries the access and never knows) ...
HIDDEN = "hidden"
#: ... or the access must be completed by the software MMU (:mod:`vmkit.vmm.paging.softmmu`):
#: the real tables cannot express it (beyond the VM's memory, a write the guest allows but the
#: shadow entry cannot, a write to a page the mode traces)
EMULATE = "emulate"
#: ... or the fault is the guest's own, as it arrived (the guest's tables are the real ones)
GUEST = "guest"


@dataclass(frozen=True)
class PagingView:
    """What a picture of a VM's translation needs (vmkit.viz.memory): ``kind`` ("shadow",
    "nested", "direct"), ``root`` the host-physical table the real MMU starts from for this VM
    (the shadow page directory; the EPT root; the real CR3 under direct paging), ``levels`` the
    levels of the nested table (0 when there is none), ``table`` the nested table object
    (with ``translate``/``rights``/``mappings``) or None."""

    kind: str
    root: int
    levels: int = 0
    table: object = None


class PagingMode:
    """One way of virtualizing the guest's page tables (see the module text). A subclass
    states its name, its kind, its state and the operations that differ; the defaults are
    those of a mode in which the guest's paging is the hardware's (nothing to do).

    Class attributes:

    * ``name``: the registry name (``"vtlb"``, ``"ept"``, ``"direct"``);
    * ``kind``: ``"shadow"`` (the real tables are the VMM's copy of the guest's: te, bt and hw
      without EPT take any shadow mode), ``"nested"`` (a second-level table, hw), ``"direct"``
      (the guest's own tables, validated: pv); what viz draws;
    * ``vm_state``: what the mode keeps on each VM object, saved by ``snapshot()`` and rolled
      back by ``restore()`` with the VM's own declared state (:mod:`vmkit.vmm.state`);
    * ``cr0_forced`` / ``cr4_cleared``: real CR0 bits the mode needs set, CR4 bits it needs
      clear, while the guest runs (shadow paging: paging and write protection on, 4 KiB pages);
    * ``traces``: whether the mode write-protects guest pages (page tables) and follows each
      write to them (:meth:`traced_write`).
    """

    name = ""
    kind = ""
    title = ""
    vm_state: tuple = ()
    cr0_forced = 0
    cr4_cleared = 0
    traces = False

    def __init__(self, monitor):
        self.monitor = monitor

    def __repr__(self) -> str:
        return f"<paging mode {self.name!r} of {getattr(self.monitor, 'name', '?')}>"

    # ---- a VM's structures -----------------------------------------------------------------
    def boot_vm(self, vm) -> None:
        """Make the VM's paging structures as the machine powers on (after its slice and
        VMM area are set up)."""

    def root(self, vm) -> int:
        """The real CR3 the VM starts with (the shadow page directory under shadow paging;
        the guest's own CR3, 0 at power-on, under nested paging)."""
        return vm.pd

    # ---- the guest's control registers and TLB ---------------------------------------------
    def update_cr3(self, vm, value: int) -> None:
        """The guest loaded CR3 with ``value`` (its virtual CPU already holds it)."""

    def update_paging(self, vm, n: int, old: int, new: int) -> None:
        """The guest changed CR``n`` (0 or 4) from ``old`` to ``new``: paging on or off, write
        protection, page sizes."""

    def invlpg(self, vm, lin: int) -> None:
        """The guest's INVLPG of guest-linear ``lin``."""
        self.monitor._host.invlpg(lin & 0xFFFFFFFF)

    def switched_in(self, vm) -> None:
        """``vm`` has the real CPU again (a world switch, a restore): put its structures in
        the MMU (the real TLB is flushed by the world switch itself)."""

    # ---- faults ----------------------------------------------------------------------------
    def page_fault(self, vm, lin: int, write: bool, user: bool) -> str:
        """A page fault of the real MMU while the guest ran (a trap into the VMM, or a #PF
        exit): -> :data:`HIDDEN` (handled here: the guest retries), :data:`EMULATE` (the
        software MMU completes the access) or :data:`GUEST` (the fault is the guest's, as it
        arrived: the default). A mode that walks the guest's tables raises the guest's own
        ``Fault`` (#PF, CR2 set) when they deny the access: the monitor delivers it."""
        return GUEST

    def nested_fault(self, vm, gpa: int) -> bool:
        """A fault of the second dimension (an EPT violation) at guest-physical ``gpa``:
        True when the mode mapped the page (the guest retries)."""
        return False

    def prefill(self, vm, lin: int, write: bool, user: bool) -> bool:
        """An access the software MMU is about to make for an adapted instruction: would it
        have faulted on the real tables without being the guest's fault (a hidden page fault,
        a traced write)? A mode that fills its tables on such faults fills the entry now, as
        the fault would have (the software MMU walks the guest's tables anyway), so the
        instructions that follow do not fault there. False by default: the real tables are
        the guest's own, or complete (nested, direct paging)."""
        return False

    def traced_write(self, vm, lin: int, n: int, value: int, user: bool) -> None:
        """A write of the software MMU to a page this mode traces (``traces``): store it
        through the guest's tables and bring the mode's structures up to date (a traced shadow
        mode updates the shadow entry of the guest PTE written). Called for every write the
        software MMU makes while ``traces`` is set; by default a plain guest write."""
        vm.lin_write(lin, n, value, user)

    # ---- what viz draws --------------------------------------------------------------------
    def view(self, vm) -> PagingView:
        """What a picture of ``vm``'s translation needs (:class:`PagingView`)."""
        return PagingView(self.kind, vm.real_cpu.cr3)


#: name -> PagingMode subclass (:func:`register`)
MODES: dict[str, type[PagingMode]] = {}


def register(cls: type[PagingMode]) -> type[PagingMode]:
    """Add a mode to :data:`MODES` under its ``name`` (a class decorator)."""
    if not cls.name or cls.kind not in ("shadow", "nested", "direct"):
        raise VmkitError(f"paging mode {cls.__name__} needs a name and a kind (shadow, nested "
                         f"or direct)")
    MODES[cls.name] = cls
    return cls


def select(monitor, name, kinds: tuple, **options) -> PagingMode:
    """The paging mode ``name`` for ``monitor`` (made with ``options``), as
    :func:`mode_class` finds it."""
    return mode_class(monitor, name, kinds)(monitor, **options)


def mode_class(monitor, name, kinds: tuple) -> type[PagingMode]:
    """The paging mode class ``name`` for ``monitor``, which takes modes of ``kinds``; an
    unknown name, or a mode the monitor cannot use, is a one-line VmkitError naming the
    choices."""
    usable = [n for n, c in MODES.items() if c.kind in kinds]
    cls = MODES.get(name) if isinstance(name, str) else None
    if cls is None or cls.kind not in kinds:
        close = difflib.get_close_matches(str(name), usable, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        what = "unknown paging mode" if cls is None else f"{monitor.name} cannot use paging mode"
        raise VmkitError(f"{what} {name!r}: {monitor.name} takes "
                         f"{', '.join(repr(n) for n in usable)}{hint}")
    return cls


def shadow_choice(monitor, shadow, paging):
    """The mode name a monitor's ``shadow=`` and ``paging=`` arguments ask for: ``shadow`` names
    a shadow paging mode (``"vtlb"``, ``"traced"``) and is another spelling of ``paging`` for
    those; giving both, different, is a one-line VmkitError."""
    if shadow is None:
        return paging
    mode_class(monitor, shadow, ("shadow",))
    if paging is not None and paging != shadow:
        raise VmkitError(f"shadow={shadow!r} contradicts paging={paging!r}: give one of them")
    return shadow
