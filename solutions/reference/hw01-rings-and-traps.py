"""Reference answers of hw01 (read by the grader only)."""
import struct

from vmkit import guests
from vmkit.vmm import Native


def expected(P):
    monitor = Native(guests.build(P["guest"], iterations=P["iterations"]))
    frames = []

    def on_interrupt(ev):
        if ev.vector == 0x80 and not frames:
            frame = monitor.machine.read(monitor.cpu.esp, 20)
            frames.append(dict(zip(["eip", "cs", "eflags", "esp", "ss"],
                                   struct.unpack("<5I", frame))))
    monitor.on("interrupt", on_interrupt)
    monitor.run(max_steps=1_000_000)
    return {"ring_transitions": monitor.trace.counts["ring"],
            "vectors": sorted({e.vector for e in monitor.trace.of("interrupt")}),
            "frame": frames[0]}
