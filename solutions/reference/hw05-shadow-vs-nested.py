"""Reference answers of hw05 (read by the grader only)."""
from collections import Counter

from vmkit import guests
from vmkit.vmm import HardwareAssisted


def expected(P):
    ept = HardwareAssisted(guests.build(P["guest"], **P["params"]), ept=True)
    walks = Counter()
    ept.on("tlb_miss", lambda ev: walks.update([ev.references]))
    ept.run(max_steps=2_000_000)
    shadow = HardwareAssisted(guests.build(P["guest"], **P["params"]), ept=False)
    shadow.run(max_steps=2_000_000)
    return {"walk_refs": [n * m + n + m for n, m in P["levels"]],
            "walks": sorted([k, v] for k, v in walks.items()),
            "exits": {"ept": sum(ept.stats["vm_exits"].values()),
                      "shadow": sum(shadow.stats["vm_exits"].values()),
                      "hidden_page_faults": shadow.stats["hidden_page_faults"]}}
