"""tools/rename_monitor_var.py, the notebooks' migration from ``vm`` to ``monitor`` for a monitor
(rerun after merging notebook edits): what it renames and what it must leave alone."""

from __future__ import annotations

import importlib.util
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "rename_monitor_var.py"
spec = importlib.util.spec_from_file_location("rename_monitor_var", TOOL)
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


def test_a_monitor_is_renamed_in_code_strings_and_alignment():
    """Are the name, f-strings that show it and an aligned comment and continuation renamed,
    while an attribute called vm and a vm= keyword stay?"""
    src = ('vm = TrapAndEmulate(img)   # one guest\n'
           'for label, vm in (("te", TrapAndEmulate(img)),\n'
           '                  ("bt", BinaryTranslation(img))):\n'
           '    print(f"{vm.name}: {vm.vcpu.cpl}", "vm.stats", e.vm)\n'
           'dbg.break_at("main", vm=1)\n')
    assert tool.rename_code(src) == (
        'monitor = TrapAndEmulate(img)  # one guest\n'
        'for label, monitor in (("te", TrapAndEmulate(img)),\n'
        '                       ("bt", BinaryTranslation(img))):\n'
        '    print(f"{monitor.name}: {monitor.vcpu.cpl}", "monitor.stats", e.vm)\n'
        'dbg.break_at("main", vm=1)\n')


def test_guest_vms_and_taken_names_are_left_alone():
    """Is a handler's vm (a guest VM) left alone, a loop over mon.vms too, and is 'mon' used in
    a cell where 'monitor' already names a monitor class? Is a second run a no-op?"""
    handler = "def counting_cli(vm, insn):\n    default_cli(vm, insn)\n"
    loop = "for vm in mon.vms:\n    print(vm.console)\n"
    assert tool.rename_code(handler) == handler and tool.rename_code(loop) == loop
    cls_loop = "for monitor in (Native, TrapAndEmulate):\n    vm = monitor(img)\n    vm.run()\n"
    assert tool.rename_code(cls_loop) == ("for monitor in (Native, TrapAndEmulate):\n"
                                          "    mon = monitor(img)\n    mon.run()\n")
    once = tool.rename_code("vm = Native(img)\n")
    assert tool.rename_code(once) == once == "monitor = Native(img)\n"
    md = "The guest sees `vm.vcpu`.\nA table from mnemonic to `handler(vm, insn)`: `vm.vcpu`.\n"
    assert tool.rename_markdown(md) == ("The guest sees `monitor.vcpu`.\n"
                                        "A table from mnemonic to `handler(vm, insn)`: `vm.vcpu`.\n")
