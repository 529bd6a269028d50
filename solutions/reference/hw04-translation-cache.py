"""Reference answers of hw04 (read by the grader only)."""
from vmkit import guests
from vmkit.vmm import BinaryTranslation
from vmkit.vmm.bt import FIFO, LRU, FlushWhenFull


def expected(P):
    def rate(threshold, policy):
        monitor = BinaryTranslation(guests.build(P["guest"], **P["params"]),
                                    threshold=threshold, tc_size=P["tc_size"], policy=policy())
        monitor.run(max_steps=2_000_000)
        return monitor.stats["tc_hits"] / monitor.stats["tc_lookups"]
    rates = {p.__name__: rate(P["threshold"], p) for p in (LRU, FIFO, FlushWhenFull)}
    return {"hit_rate": rates["LRU"], "rates": rates,
            "sweep": [[t, rate(t, LRU)] for t in P["thresholds"]]}
