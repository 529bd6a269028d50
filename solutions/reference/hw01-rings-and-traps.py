"""Reference answers of hw01 (read by the grader only)."""
import struct

from vmkit import guests
from vmkit.vmm import Native


def expected(P):
    vm = Native(guests.build(P["guest"], iterations=P["iterations"]))
    frames = []

    def on_interrupt(ev):
        if ev.vector == 0x80 and not frames:
            frames.append(dict(zip(["eip", "cs", "eflags", "esp", "ss"],
                                   struct.unpack("<5I", vm.machine.read(vm.cpu.esp, 20)))))
    vm.on("interrupt", on_interrupt)
    vm.run(max_steps=1_000_000)
    return {"ring_transitions": vm.trace.counts["ring"],
            "vectors": sorted({e.vector for e in vm.trace.of("interrupt")}),
            "frame": frames[0]}
