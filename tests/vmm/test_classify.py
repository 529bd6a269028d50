"""Popek & Goldberg classes found by experiment (vmkit.classify, vmkit.classify_all) and the
``vmkit classify`` command."""

from __future__ import annotations

import pytest

import vmkit
from vmkit.cli import main
from vmkit.errors import VmkitError
from vmkit.isa import semantics
from vmkit.vmm import classify as cl


@pytest.fixture(scope="module")
def table():
    return vmkit.classify_all()


# ---- single instructions ---------------------------------------------------------------------
def test_popfd_is_sensitive_but_not_privileged():
    """Does POPF at CPL 3 silently keep IF where CPL 0 sets it, without a trap?"""
    c = vmkit.classify("popfd")
    assert c.sensitive and not c.privileged
    assert c.control_sensitive          # at CPL 0 it loads IF and IOPL
    assert c.behavior_sensitive         # ... and at CPL 3 the same pop leaves them alone
    assert any("IF ends 0x1 vs 0x0" in e and "the mode" in e for e in c.evidence), c.evidence


def test_push_cs_is_behaviour_sensitive():
    """Does PUSH CS push a different selector at CPL 0 and CPL 3?"""
    c = vmkit.classify("push cs")
    assert c.behavior_sensitive and not c.privileged and not c.control_sensitive
    assert any("0x00000008 vs 0x0000001b" in e for e in c.evidence), c.evidence


def test_mov_between_general_registers_is_innocuous():
    c = vmkit.classify("mov eax, ebx")
    assert c.innocuous and not c.sensitive and not c.privileged
    assert not c.control_sensitive and not c.behavior_sensitive


def test_lgdt_is_privileged_and_control_sensitive():
    c = vmkit.classify("lgdt [eax]")
    assert c.privileged and c.control_sensitive and c.sensitive
    assert any("GDTR" in e for e in c.evidence)
    assert any("#GP" in e and "vector 13" in e for e in c.evidence)


def test_sgdt_is_behaviour_sensitive_and_not_privileged():
    """Does SGDT at CPL 3 reveal where the real GDT is?"""
    c = vmkit.classify("sgdt [eax]")
    assert c.behavior_sensitive and not c.privileged and not c.control_sensitive
    assert c.user_sensitive
    assert any("GDTR" in e and "0x6000007f vs 0x6100007f" in e for e in c.evidence), c.evidence


@pytest.mark.parametrize("line", ["cli", "sti", "hlt", "mov eax, cr0", "mov cr3, eax",
                                  "lidt [eax]", "ltr ax", "clts", "in al, dx", "out 0x21, al",
                                  "invlpg [eax]"])
def test_system_instructions_are_privileged(line):
    c = vmkit.classify(line)
    assert c.privileged and c.sensitive, c.evidence


@pytest.mark.parametrize("line", ["add eax, ebx", "push eax", "ret", "jmp 0x2000",
                                  "movsb", "cpuid", "mov eax, dword ptr [eax]"])
def test_ordinary_instructions_are_innocuous(line):
    c = vmkit.classify(line)
    assert c.innocuous and not c.privileged, c.evidence


def test_the_experiment_ran_in_the_states_it_names():
    """Are the classes found by running, in states differing in the virtualized resources?"""
    c = vmkit.classify("smsw eax")
    first = c.evidence[0]
    for state in ("base", "gdtr", "idtr", "ldtr", "tr", "cr0", "if", "iopl", "paging"):
        assert state in first
    assert c.runs == 21
    assert "CPL 3" in first
    assert any("CR0 (state cr0)" in e and "eax = 0x11 vs 0x1b" in e for e in c.evidence)


def test_operands_are_part_of_the_experiment():
    """Is INT n's class decided by its gate (an experiment) rather than by its mnemonic?
    The lab's IDT gives vector 0x80 DPL 3 and vector 0x21 DPL 0."""
    assert not vmkit.classify("int 0x80").privileged
    assert vmkit.classify("int 0x21").privileged


def test_a_bare_mnemonic_means_its_canonical_form():
    assert vmkit.classify("lgdt").instruction == "lgdt [eax]"
    assert vmkit.classify("popfd").instruction == "popfd"


@pytest.mark.parametrize("bad", ["fld st0", "mov eax,", "nop; nop", "rdmsr", ""])
def test_bad_instruction_text_raises_a_vmkit_error(bad):
    with pytest.raises(VmkitError):
        vmkit.classify(bad)


def test_classification_is_frozen():
    c = vmkit.classify("nop")
    with pytest.raises(AttributeError):
        c.privileged = True


# ---- the whole subset ------------------------------------------------------------------------
def test_classify_all_is_cached():
    """One experiment a process (its time: benchmarks/bench_tools.py)."""
    a = vmkit.classify_all()
    assert vmkit.classify_all() is a


def test_classify_all_covers_every_registered_mnemonic(table):
    semantics._load()
    covered = {r.mnemonic for r in table.rows}
    for m in semantics.BY_MNEMONIC:
        forms = cl.canonical_forms(m)
        assert m in table.skipped or covered & {m} or any(f in table.skipped for f in forms) \
            or any(f in table for f in forms), m


def test_classify_all_has_several_forms_where_operands_matter(table):
    for form in ("mov eax, cr0", "mov cr0, eax", "mov eax, cs", "mov ds, ax", "in al, dx",
                 "in al, 0x21", "out dx, al", "out 0x21, al", "push cs", "pop ds"):
        assert form in table, form


def test_table_counts_and_renderings(table):
    c = table.counts()
    assert c["forms"] == len(table.rows) > 150
    # every form is privileged, or innocuous, or sensitive and unprivileged
    assert c["privileged"] + c["innocuous"] + c["theorem1_violators"] == c["forms"]
    text = repr(table)
    assert "SENSITIVE, UNPRIVILEGED" in text and "popfd" in text
    assert text.splitlines()[-1].startswith(f"{c['forms']} forms")
    h = table.to_html()
    assert h.startswith("<table>") and "<code>popfd</code>" in h
    assert table._repr_html_() == h


def test_every_privileged_instruction_is_sensitive(table):
    """A privileged instruction that showed or changed nothing would point at a weak state set."""
    assert all(r.sensitive for r in table.rows if r.privileged)


# ---- Popek & Goldberg's theorems and Robin & Irvine ------------------------------------------
def test_theorem1_fails_on_x86_with_the_classic_violators(table):
    v = cl.theorem1(table)
    assert not v.holds
    names = set(v.instructions)
    for form in ("popfd", "pushfd", "sgdt [eax]", "sidt [eax]", "smsw eax", "push cs",
                 "lar eax, ebx", "str ax"):
        assert table[form].instruction in names, form
    assert table.violators() == v
    assert all(not r.privileged and r.sensitive for r in v)
    assert "Theorem 1" in repr(v)


def test_theorem3_violators_are_the_user_sensitive_unprivileged(table):
    v = cl.theorem3(table)
    names = set(v.instructions)
    assert {"sgdt [eax]", "sidt [eax]", "smsw eax", "pushfd", "str ax"} <= names
    # POPF is harmless for a hybrid monitor: at CPL 3 it neither changes nor shows anything
    assert "popfd" not in names and "push cs" not in names
    assert names <= set(cl.theorem1(table).instructions)


def test_robin_irvine_list():
    ri = cl.robin_irvine()
    names = [e.name for e in ri]
    assert names[:6] == ["SGDT", "SIDT", "SLDT", "SMSW", "PUSHF", "POPF"]
    assert {"LAR", "LSL", "VERR", "VERW", "POP", "PUSH", "CALL", "JMP", "INT n", "RET", "STR",
            "MOV"} <= set(names)
    assert {e.group for e in ri} == {cl.REGISTER, cl.PROTECTION}
    assert all(e.group == cl.REGISTER for e in ri[:6])


def test_robin_irvine_instructions_come_out_sensitive_and_unprivileged(table):
    """Do the experiments agree with Robin & Irvine on every one of their instructions?"""
    checks = cl.compare_robin_irvine(table)
    assert len(checks) == len(cl.robin_irvine())
    disagree = [(c.entry.name, [str(r) for r in c.rows]) for c in checks if not c.agrees]
    assert not disagree
    v = set(cl.theorem1(table).instructions)
    for c in checks:
        for r in c.rows:
            assert r.instruction in v


# ---- the command -----------------------------------------------------------------------------
def test_cli_classify_privileged_and_innocuous(capsys):
    assert main(["classify", "lgdt [eax]", "mov eax, ebx"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert "lgdt [eax]" in out[0] and "privileged" in out[0] and "unprivileged" not in out[0]
    assert "mov eax, ebx" in out[1] and "innocuous" in out[1] and "unprivileged" in out[1]


def test_cli_classify_one_instruction_shows_its_evidence(capsys):
    assert main(["classify", "popfd"]) == 0
    out = capsys.readouterr().out
    assert "breaks Theorem 1" in out and "ran 42 times" in out


def test_cli_classify_bad_instruction_is_a_one_line_error(capsys):
    assert main(["classify", "fld st0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("vmkit classify: ") and err.count("\n") == 1


def test_cli_classify_all(capsys):
    assert main(["classify", "all"]) == 0
    out = capsys.readouterr().out
    assert "Theorem 1" in out and "Theorem 3" in out and "forms:" in out


def test_far_jumps_and_calls_through_memory_are_far():
    """Capstone gives jmp/call m16:32 the ids of the near forms; do they load CS?"""
    for line in ("ljmp [eax]", "lcall [eax]"):
        c = vmkit.classify(line)
        assert any("CS 0x8 -> 0x40" in e for e in c.evidence), c.evidence


# ---- the lab's shortcuts ---------------------------------------------------------------------
#: runs that write the system tables (a descriptor through memory, TR's busy bit), the ring-0
#: stack of an interrupt from ring 3, scratch memory, the instruction's own bytes, the devices,
#: and that drop TLB entries or stop the machine
_WRITERS = ["mov dword ptr [0x6008], ebx", "ltr ax", "int 0x80", "sgdt [eax]", "pushal",
            "mov byte ptr [0x1001], al", "mov cr3, eax", "invlpg [eax]", "out 0x21, al",
            "iretd", "rep stosd", "hlt", "add eax, ebx"]


def test_lab_shortcuts_find_what_full_restores_find():
    """The lab puts its machines back by the pages written since and looks for changed memory
    only on the pages a run wrote. Does every run end as it does with ``Machine.restore``
    and all memory compared, and is each machine put back what a full restore leaves?"""
    from dataclasses import astuple

    from vmkit.vmm.classify.forms import _form
    from vmkit.vmm.classify.lab import Lab
    fast, plain = Lab(), Lab(shortcuts=False)
    seen = {"tables": 0, "memory": 0, "tlb": 0, "devices": 0, "trap": 0}
    for line in _WRITERS:
        f = _form(line)
        for setup in cl.setups_for(f.insn):
            for a, b in zip(fast.states, plain.states):
                oa, ob = fast.run(f.code, setup, *a), plain.run(f.code, setup, *b)
                assert astuple(oa) == astuple(ob), (line, setup.name, oa.where)
                seen["tables"] += bool(oa.tables)
                seen["memory"] += bool(oa.n_after and oa.n_after[3])
                seen["tlb"] += bool(oa.tlb_lost)
                seen["devices"] += "devices" in oa.changes() if oa.v_after else 0
                seen["trap"] += oa.trapped
    assert all(seen.values()), seen
    for _, _, m, snap in fast.states:
        fast._put_back(m, snap)
        now = m.snapshot()
        assert now.memory == snap.memory
        assert (now.cpu, now.devices, now.clock) == (snap.cpu, snap.devices, snap.clock)
        for k in ("steps", "stopped", "inhibit", "tlb", "counters"):
            assert now.extra[k] == snap.extra[k], k
        t, s = now.extra["trace"], snap.extra["trace"]
        assert (t[0], t[4], t[5]) == (s[0], s[4], s[5])    # first, counts, total
        assert not m._icache_sup and not m._icache_usr      # no live code, as restore
