"""Reference model of hw02's checksum engine (read by the grader only; ``P`` is given)."""


def dev_out(dev, offset, size, value):
    if offset == 0:
        dev["sum"] = (dev["sum"] * P["mult"] + (value & 0xFF)) % 2**32
        dev["count"] = (dev["count"] + 1) % 2**32
    elif offset == 1 and value & 0xFF == 1:
        dev["sum"], dev["count"] = P["seed"], 0


def dev_in(dev, offset, size):
    value = {0: dev["sum"], 1: dev["count"]}.get(offset, 0xFFFFFFFF)
    return value & ((1 << (8 * size)) - 1)
