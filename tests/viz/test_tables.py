"""The descriptor-table views decode what the kernel built."""

from vmkit import guests
from vmkit.viz.tables import gdt_rows, idt_rows, rows_html, tss_fields
from vmkit.vmm import Native


def booted():
    img = guests.build("hello")
    vm = Native(img)
    vm.run(max_steps=8000)   # past boot: the first process is running
    return img, vm


def test_gdt_rows_show_the_kernels_segments_and_busy_tss():
    _, vm = booted()
    rows = {r["selector"]: r for r in gdt_rows(vm.machine)}
    assert rows[0x08]["kind"].startswith("code") and rows[0x08]["dpl"] == 0
    assert rows[0x20]["kind"].startswith("data") and rows[0x20]["dpl"] == 3
    assert rows[0x28]["kind"] == "32-bit TSS (busy)"


def test_idt_rows_name_the_handlers_and_the_syscall_gate_dpl():
    img, vm = booted()
    rows = {r["vector"]: r for r in idt_rows(vm.machine, symbols=img.symbols)}
    assert rows[0x80]["dpl"] == 3 and rows[0x80]["symbol"] == "syscall_stub"
    assert rows[14]["dpl"] == 0 and rows[14]["symbol"] == "stub_pf"
    assert rows[32]["kind"] == "32-bit interrupt gate"


def test_tss_holds_the_running_process_kernel_stack():
    img, vm = booted()
    t = tss_fields(vm.machine)
    assert t["ss0"] == 0x10
    assert t["esp0"] == img.symbols["kstacks"] + 4096  # process 1's kernel stack top


def test_looking_at_tables_does_not_change_the_machine():
    _, vm = booted()
    before = (bytes(vm.machine.mem), vm.machine.tlb_misses)
    gdt_rows(vm.machine), idt_rows(vm.machine), tss_fields(vm.machine)
    assert (bytes(vm.machine.mem), vm.machine.tlb_misses) == before


def test_rows_html_has_a_caption_and_hex_addresses():
    img, vm = booted()
    h = rows_html(idt_rows(vm.machine, vectors=[0x80], symbols=img.symbols), "IDT")
    assert "<caption>IDT</caption>" in h and "syscall_stub" in h and "0x0000" in h
