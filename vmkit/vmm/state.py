"""State declared once: what a snapshot saves and a restore rolls back.

A class names its state in a class attribute (``monitor_state`` on a monitor, ``vm_state`` on
a VM, ``state_fields`` on a virtual CPU or a paging structure), and every
subclass adds its own names; :func:`declared` collects them along the MRO. :func:`save` and
:func:`load` read that declaration, so a counter added to one list cannot be forgotten by the
snapshot or the restore (the drift the kit once had: a counter not rolled back, per-VM lists
left out of snapshots). ``tests/vmm/test_snapshot_counters.py`` checks every declared counter.

The statistics a monitor reports are declared the same way (``stats_fields``:
:func:`declared_stats`, read by :func:`report`): a counter is named once, in
``monitor_state``, and ``stats_fields`` says where it goes in the order the command line
prints.

How a value is kept (:func:`kept`) and put back (:func:`put`):

* plain containers (``dict``, ``Counter``, ``list``, ``set``, and containers of them) are
  copied, so the snapshot does not change as the live value does;
* an object with ``state()`` / ``set_state()`` (a CPU, a VMCS, an EPT, a virtual CPU) is saved
  as its state, and restored *in place*: other objects hold references to it;
* an object with ``copy()`` (the devices, a table register) is copied both ways;
* anything else (numbers, tuples, bytes, frozen results, ``None``) as it is.
"""

from __future__ import annotations

import functools
from collections import Counter

__all__ = ["declared", "kept", "put", "save", "load", "declared_stats", "report", "traced",
           "event", "host", "total", "copy_counts"]


def copy_counts(counts) -> Counter:
    """A new ``Counter`` with the items of ``counts`` (a mapping of counts), in their order:
    what ``Counter(counts)`` gives, at a sixth of its cost (no ``__init__``/``update`` in
    Python; a scheduler prices the running monitor's counts at every run chunk and trap)."""
    new = _new_counter(Counter)
    _dict_update(new, counts)
    return new


_new_counter = Counter.__new__
_dict_update = dict.update


def declared(cls, attribute: str) -> tuple:
    """The names ``attribute`` lists on ``cls`` and its bases, bases first, each once."""
    names: list = []
    for klass in reversed(cls.__mro__):
        for n in vars(klass).get(attribute, ()):
            if n not in names:
                names.append(n)
    return tuple(names)


def _container(v):
    if isinstance(v, dict):           # a Counter stays a Counter
        out = type(v)()
        for k, x in v.items():
            out[k] = _container(x)
        return out
    if isinstance(v, (list, set)):
        return type(v)(_container(x) for x in v)
    return v


def kept(v):
    """A value as a snapshot keeps it (see the module text)."""
    if isinstance(v, (dict, list, set)):
        return _container(v)
    if hasattr(v, "set_state"):
        return v.state()
    if hasattr(v, "copy"):
        return v.copy()
    return v


def put(obj, name: str, saved) -> None:
    """Put ``saved`` (a :func:`kept` value) back as ``obj.name``."""
    live = getattr(obj, name, None)
    if saved is not None and hasattr(live, "set_state"):
        live.set_state(saved)
    elif isinstance(saved, (dict, list, set)):
        setattr(obj, name, _container(saved))
    elif hasattr(saved, "copy"):
        setattr(obj, name, saved.copy())
    else:
        setattr(obj, name, saved)


def save(obj, attribute: str) -> dict:
    """Every name ``type(obj)`` declares in ``attribute`` -> its kept value."""
    return {n: kept(getattr(obj, n)) for n in declared(type(obj), attribute)}


def load(obj, saved: dict) -> None:
    """Put back what :func:`save` returned, in the order it was declared."""
    for n, v in saved.items():
        put(obj, n, v)



# ---- statistics: read from the declared state ------------------------------------------------
def declared_stats(cls) -> tuple:
    """The ``stats_fields`` a class and its bases declare, bases first: (key, source) pairs; a
    plain name is a key read from the attribute of that name (a counter the class declares in
    ``monitor_state``), and a pair is (key, attribute name or function of the object). A
    subclass that declares a key again replaces its source where the base put it (the order
    the command line prints)."""
    return _declared_stats(cls)


@functools.lru_cache(maxsize=None)
def _declared_stats(cls) -> tuple:
    out: dict = {}
    for klass in reversed(cls.__mro__):
        for entry in vars(klass).get("stats_fields", ()):
            key, src = (entry, entry) if isinstance(entry, str) else entry
            out[key] = src
    return tuple(out.items())


def report(obj) -> dict:
    """``obj``'s statistics (:func:`declared_stats`): per-key counts as ``Counter`` copies."""
    out = {}
    for key, src in _declared_stats(type(obj)):
        v = getattr(obj, src) if isinstance(src, str) else src(obj)
        out[key] = copy_counts(v) if isinstance(v, Counter) else v
    return out


def traced(kind: str):
    """A stats source: the trace's count of events of ``kind``."""
    return lambda mon: mon.trace.counts[kind]


def event(kind: str):
    """A stats source: the cost model's count of ``kind`` (``mon.events``)."""
    return lambda mon: mon.events[kind]


def host(attr: str):
    """A stats source: an attribute of the host machine."""
    return lambda mon: getattr(mon._host, attr)


def total(attr: str):
    """A stats source: the sum of a per-key counter."""
    return lambda mon: sum(getattr(mon, attr).values())
