"""Generated documents stay in sync with the code they describe."""

from __future__ import annotations

import os
import re

from vmkit.isa import refcard, semantics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_reference_card_matches_the_semantics_registry():
    with open(os.path.join(ROOT, "docs", "reference.md"), encoding="utf-8") as f:
        on_disk = f.read()
    assert on_disk == refcard.render(), "run: python -m vmkit.isa.refcard > docs/reference.md"


def test_reference_card_lists_every_registered_mnemonic():
    text = refcard.render()
    semantics._load()
    for entry in semantics.REGISTRY.values():
        for m in entry.mnemonics:
            assert f"`{m}`" in text, m


def test_every_handler_names_its_sdm_entry():
    semantics._load()
    for entry in semantics.REGISTRY.values():
        assert "SDM" in entry.sdm, entry.mnemonics
        assert entry.doc, f"{entry.mnemonics} has no docstring"


def test_guest_abi_doc_lists_the_system_calls_of_abi_s():
    with open(os.path.join(ROOT, "vmkit", "guests", "abi.s"), encoding="utf-8") as f:
        abi = dict((n, int(v, 0)) for n, v in re.findall(r"\.equ SYS_(\w+), (\w+)", f.read()))
    with open(os.path.join(ROOT, "docs", "guest-abi.md"), encoding="utf-8") as f:
        doc = f.read()
    rows = dict((name, int(num)) for num, name in re.findall(r"^\| (\d+) \| `(\w+)\(", doc, re.M))
    for name, num in abi.items():
        if name == "CALL_COUNT":
            continue
        assert rows.get(name.lower()) == num, f"SYS_{name} = {num} missing or different in the doc"
