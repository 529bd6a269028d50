"""Reference answers of hw03 (read by the grader only)."""
import vmkit


def expected(P):
    def kind(instr):
        c = vmkit.classify(instr)
        return "privileged" if c.privileged else ("sensitive" if c.sensitive else "innocuous")
    return {"predictions": {i: kind(i) for i in P["predict"]},
            "violators": sorted(i for i in P["candidates"] if kind(i) == "sensitive")}
