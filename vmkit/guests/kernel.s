# vmkit mini kernel
# =================
# A small protected-mode kernel in the kit's x86 subset. It is the guest operating system that
# every monitor runs, unchanged: Native runs it in ring 0, the monitors deprivilege it.
#
# What it does, in order (see docs/guest-abi.md for the contract):
#   1. loads its own GDT (ring 0 and ring 3 code/data, a TSS) and reloads every segment register
#   2. builds its IDT: exception handlers 0-19, the timer (IRQ 0 = vector 32), and the system
#      call gate 0x80 with DPL 3 so user code may "int 0x80"
#   3. fills the TSS (SS0:ESP0 = the current process's kernel stack) and loads TR
#   4. builds one address space per process: the kernel identity-maps physical memory 0-4 MiB
#      supervisor-only (the null page is left unmapped), and each process gets its program
#      at 0x00400000, a stack page below 0x00800000 and a demand-paged heap at 0x00800000
#   5. turns paging on (CR0.PG, with CR0.WP so the kernel respects read-only pages too),
#      programs the timer and the interrupt controller, and "returns" into the first process
#      with iretd
#   6. from then on it only runs in interrupts: system calls, the timer (preemptive round
#      robin), page faults (demand paging) and other exceptions (a user process that faults is
#      killed, or sent to its registered fault handler)
#
# The configuration (number of processes, where the builder put each program, the timer period)
# comes from config.s, which vmkit.guests generates for each guest image.

.include "config.s"
.include "abi.s"
.include "pvops.s"               # privileged operations as macros (native or paravirtual)

# ---- layout constants ------------------------------------------------------------------------
.equ KCODE, 0x08                # ring-0 code selector
.equ KDATA, 0x10                # ring-0 data selector
.equ UCODE, 0x1B                # ring-3 code selector (index 3, RPL 3)
.equ UDATA, 0x23                # ring-3 data selector (index 4, RPL 3)
.equ TSS_SEL, 0x28              # TSS selector (index 5)

.equ PG_P, 1                    # page present
.equ PG_W, 2                    # writable
.equ PG_U, 4                    # user-accessible
.equ PAGE, 4096

.equ USER_BASE, 0x00400000      # programs are linked here (page directory entry 1)
.equ USER_STACK_TOP, 0x00800000 # the stack page is the last page below this
.equ HEAP_BASE, 0x00800000      # demand-paged heap (page directory entry 2), 4 MiB
.equ HEAP_END, 0x00C00000

.equ FRAMES_BASE, 0x00200000    # physical frames handed out by alloc_frame
.equ FRAMES_END, 0x00400000

# process control block (PCB) fields
.equ PCB_STATE, 0               # 0 = unused or exited, 1 = runnable
.equ PCB_KESP, 4                # saved kernel stack pointer (points at a trap frame)
.equ PCB_CR3, 8                 # physical address of its page directory
.equ PCB_PID, 12
.equ PCB_ONFAULT, 16            # user handler for #DE (0 = none: the process is killed)
.equ PCB_KSTACK, 20             # top of its kernel stack
.equ PCB_PT1, 24                # page table for 0x00400000-0x007FFFFF
.equ PCB_PT2, 28                # page table for the heap
.equ PCB_SIZE, 32
.equ MAX_PROCS, 4

# trap frame, as built by the entry stubs and isr_common (offsets from the frame pointer)
.equ F_EDI, 0
.equ F_ESI, 4
.equ F_EBP, 8
.equ F_EBX, 16
.equ F_EDX, 20
.equ F_ECX, 24
.equ F_EAX, 28
.equ F_VEC, 32
.equ F_ERR, 36
.equ F_EIP, 40
.equ F_CS, 44
.equ F_EFLAGS, 48
.equ F_ESP, 52
.equ F_SS, 56
.equ FRAME_SIZE, 60

.text
.global _start
# ---- boot --------------------------------------------------------------------------------------
_start:
    BOOT_ENTRY
    LOAD_GDT                        # our own GDT replaces the machine's boot GDT
    ljmp KCODE, reload_cs           # a far jump reloads CS from the new table
reload_cs:
    mov ax, KDATA
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    LOAD_KERNEL_SS
    mov esp, offset boot_stack_top

    call setup_idt
    call setup_tss
    call setup_kernel_pt
    call create_processes

    # paging on: CR3 = the first process's page directory, then CR0.PG and CR0.WP
    mov ebx, [current]
    mov eax, [ebx + PCB_CR3]
    LOAD_CR3 eax
    ENABLE_PAGING

    # interrupt controller: only IRQ 0 (the timer) unmasked; timer period from config.s
    START_TIMER

    # a guest image may run a demonstration here, in ring 0 with everything set up: the file
    # boot_hook.s is empty (it adds no byte) except in the nonvirt- guests, whose builder
    # supplies their own (see vmkit/guests/nonvirt.py)
    .include "boot_hook.s"

    # enter the first process as if returning from an interrupt
    mov ebx, [current]
    mov eax, [ebx + PCB_KSTACK]
    SET_KERNEL_STACK eax
    mov esp, [ebx + PCB_KESP]
    jmp return_to_user

# ---- IDT -----------------------------------------------------------------------------------------
# set_gate(vector in ecx, handler in edx, type/DPL byte in al)
set_gate:
    mov word ptr [idt + ecx*8], dx          # offset 15..0
    mov word ptr [idt + ecx*8 + 2], KCODE   # code selector
    mov byte ptr [idt + ecx*8 + 4], 0
    mov byte ptr [idt + ecx*8 + 5], al      # P, DPL, type
    shr edx, 16
    mov word ptr [idt + ecx*8 + 6], dx      # offset 31..16
    ret

setup_idt:
    xor ecx, ecx
1:  mov edx, [stub_table + ecx*4]           # exceptions 0-19: interrupt gates, DPL 0
    mov al, 0x8E
    call set_gate
    inc ecx
    cmp ecx, 20
    jb 1b
    mov ecx, 32                             # IRQ 0: the timer
    mov edx, offset irq0_stub
    mov al, 0x8E
    call set_gate
    mov ecx, 0x80                           # system calls: DPL 3 so ring 3 may "int 0x80"
    mov edx, offset syscall_stub
    mov al, SYSCALL_GATE
    call set_gate
    LOAD_IDT
    ret

# ---- TSS -----------------------------------------------------------------------------------------
setup_tss:
    mov dword ptr [tss + 8], KDATA          # SS0: the kernel stack segment
    mov word ptr [tss + 0x66], 104          # I/O bitmap offset beyond the limit: no port allowed
    mov eax, offset tss                     # patch the TSS base into its GDT descriptor
    mov word ptr [gdt + TSS_SEL + 2], ax
    shr eax, 16
    mov byte ptr [gdt + TSS_SEL + 4], al
    mov byte ptr [gdt + TSS_SEL + 7], ah
    mov ax, TSS_SEL
    LOAD_TR
    ret

# ---- paging --------------------------------------------------------------------------------------
# The kernel page table identity-maps physical 0-4 MiB, supervisor-only; page 0 stays unmapped
# so a null pointer faults.
setup_kernel_pt:
    mov ecx, 1
1:  mov eax, ecx
    shl eax, 12
    PHYS_TO_MACHINE eax
    or eax, PG_P | PG_W
    mov [kernel_pt + ecx*4], eax
    inc ecx
    cmp ecx, 1024
    jb 1b
    mov dword ptr [kernel_pt], 0
    KERNEL_PT_DONE
    ret

# alloc_frame() -> eax = physical address of a zeroed 4 KiB frame (panics when none is left)
alloc_frame:
    mov eax, [next_frame]
    cmp eax, FRAMES_END
    jae out_of_frames
    lea edx, [eax + PAGE]
    mov [next_frame], edx
    push edi
    push ecx
    push eax
    mov edi, eax
    xor eax, eax
    mov ecx, PAGE / 4
    cld
    rep stosd
    pop eax
    pop ecx
    pop edi
    ret
out_of_frames:
    mov esi, offset msg_oom
    call kputs
    jmp power_off

# create_processes: one PCB, address space and kernel stack per program in proc_table
create_processes:
    xor esi, esi                            # esi = process index
cp_loop:
    cmp esi, NPROC
    jae cp_done
    mov ebx, esi
    shl ebx, 5                              # PCB_SIZE = 32
    add ebx, offset pcbs
    mov dword ptr [ebx + PCB_STATE], 1
    lea eax, [esi + 1]
    mov [ebx + PCB_PID], eax
    mov dword ptr [ebx + PCB_ONFAULT], 0
    # kernel stack: kstacks + (index + 1) * 4096
    lea eax, [esi + 1]
    shl eax, 12
    add eax, offset kstacks
    mov [ebx + PCB_KSTACK], eax
    # page directory and the two user page tables
    call alloc_frame
    MAKE_L2 eax
    mov [ebx + PCB_CR3], eax
    mov edi, eax
    mov eax, offset kernel_pt
    PHYS_TO_MACHINE eax
    or eax, PG_P | PG_W                     # PDE 0: the kernel, supervisor-only
    mov [edi], eax
    call alloc_frame
    MAKE_L1 eax
    mov [ebx + PCB_PT1], eax
    PHYS_TO_MACHINE eax
    or eax, PG_P | PG_W | PG_U
    mov [edi + 4], eax                      # PDE 1: program and stack
    call alloc_frame
    MAKE_L1 eax
    mov [ebx + PCB_PT2], eax
    PHYS_TO_MACHINE eax
    or eax, PG_P | PG_W | PG_U
    mov [edi + 8], eax                      # PDE 2: the heap (filled on demand)
    # map the program: pages of proc_table[esi] at USER_BASE
    mov edi, [ebx + PCB_PT1]
    mov eax, esi
    imul eax, eax, 12
    mov edx, [proc_table + eax]             # physical address of the program
    mov ecx, [proc_table + eax + 4]         # size in bytes
    add ecx, PAGE - 1
    shr ecx, 12                             # pages
    xor eax, eax
1:  cmp eax, ecx
    jae 2f
    push edx
    PHYS_TO_MACHINE edx
    or edx, PG_P | PG_W | PG_U
    SET_PTE [edi + eax*4], edx
    pop edx
    add edx, PAGE
    inc eax
    jmp 1b
2:  # the stack page, last entry of the table (0x007FF000)
    call alloc_frame
    PHYS_TO_MACHINE eax
    or eax, PG_P | PG_W | PG_U
    SET_PTE [edi + 1023*4], eax
    MMU_FLUSH                               # the program's mappings, one batch
    # build the first trap frame on the kernel stack: "return" to the program's entry
    mov edi, [ebx + PCB_KSTACK]
    sub edi, FRAME_SIZE
    mov [ebx + PCB_KESP], edi
    push edi
    xor eax, eax
    mov ecx, FRAME_SIZE / 4
    rep stosd
    pop edi
    mov eax, esi
    imul eax, eax, 12
    mov eax, [proc_table + eax + 8]
    mov [edi + F_EIP], eax
    mov dword ptr [edi + F_CS], UCODE
    mov dword ptr [edi + F_EFLAGS], 0x202   # IF on, IOPL 0
    mov dword ptr [edi + F_ESP], USER_STACK_TOP
    mov dword ptr [edi + F_SS], UDATA
    inc esi
    jmp cp_loop
cp_done:
    mov dword ptr [current], offset pcbs
    ret

# ---- interrupt entry -----------------------------------------------------------------------------
# Every stub pushes an error code (0 when the CPU pushed none) and its vector, then joins
# isr_common, which saves the general registers and calls dispatch(frame).
stub_de:  push 0
          push 0
          jmp isr_common
stub_db:  push 0
          push 1
          jmp isr_common
stub_nmi: push 0
          push 2
          jmp isr_common
stub_bp:  push 0
          push 3
          jmp isr_common
stub_of:  push 0
          push 4
          jmp isr_common
stub_br:  push 0
          push 5
          jmp isr_common
stub_ud:  push 0
          push 6
          jmp isr_common
stub_nm:  push 0
          push 7
          jmp isr_common
stub_df:  push 8                    # the CPU pushed an error code (0)
          jmp isr_common
stub_9:   push 0
          push 9
          jmp isr_common
stub_ts:  push 10
          jmp isr_common
stub_np:  push 11
          jmp isr_common
stub_ss:  push 12
          jmp isr_common
stub_gp:  push 13
          jmp isr_common
stub_pf:  push 14
          jmp isr_common
stub_15:  push 0
          push 15
          jmp isr_common
stub_mf:  push 0
          push 16
          jmp isr_common
stub_ac:  push 17
          jmp isr_common
stub_mc:  push 0
          push 18
          jmp isr_common
stub_xm:  push 0
          push 19
          jmp isr_common
irq0_stub:
          push 0
          push 32
          jmp isr_common
syscall_stub:
          push 0
          push 0x80
          jmp isr_common

isr_common:
    pushad                          # the frame is now complete (see F_* offsets)
    mov ax, KDATA
    mov ds, ax
    mov es, ax
    mov ebp, esp                    # ebp = frame
    push ebp
    call dispatch
    add esp, 4
    cmp byte ptr [need_switch], 0
    je return_to_user
    # context switch: save this kernel stack, pick the next runnable process, load its
    # address space and kernel stack
    mov byte ptr [need_switch], 0
    mov ebx, [current]
    mov [ebx + PCB_KESP], esp
    call pick_next
    mov [current], eax
    mov esp, [eax + PCB_KESP]
    mov ecx, [eax + PCB_KSTACK]
    SET_KERNEL_STACK ecx            # ESP0 for the next trap from this process
    mov ecx, [eax + PCB_CR3]
    READ_CR3 edx
    cmp ecx, edx
    je return_to_user
    LOAD_CR3 ecx                    # new address space (flushes the TLB)
return_to_user:
    mov ax, UDATA
    mov ds, ax
    mov es, ax
    popad
    add esp, 8                      # drop vector and error code
    EVENTS_ON_RETURN
    iretd

# dispatch(frame): route by vector
dispatch:
    push ebp
    mov ebp, [esp + 8]
    mov eax, [ebp + F_VEC]
    cmp eax, 0x80
    je do_syscall
    cmp eax, 32
    je do_timer
    cmp eax, 14
    je do_page_fault
    cmp eax, 0
    je do_divide_error
    jmp do_fault

do_timer:
    ACK_TIMER                       # end of interrupt
    inc dword ptr [ticks]
    mov byte ptr [need_switch], 1   # preemption: round robin on every tick
    pop ebp
    ret

# ---- system calls: eax = number, arguments in ebx, ecx, edx; result in eax ----------------------
do_syscall:
    mov eax, [ebp + F_EAX]
    cmp eax, SYSCALL_COUNT + EXTRA_SYSCALLS   # EXTRA_SYSCALLS (config.s): those of syscalls_ext.s
    jae sys_bad
    jmp [syscall_table + eax*4]
sys_bad:
    mov dword ptr [ebp + F_EAX], -1
    pop ebp
    ret

syscall_table:
    .long sys_bad, sys_exit, sys_write, sys_getpid, sys_yield, sys_map, sys_unmap
    .long sys_setpte, sys_read, sys_onfault, sys_selfmod, sys_ticks
    # a guest image may add system calls here (numbered from SYSCALL_COUNT on): the file
    # syscalls_ext.s is empty (it adds no byte) except in guests whose builder supplies their
    # own, e.g. fork and wait for forkwait (vmkit/guests/fork.s)
    .include "syscalls_ext.s"

# exit(code in ebx): the process ends; the kernel switches away for good (exit_hook.s: no byte)
sys_exit: .include "exit_hook.s"
    mov ebx, [current]
    mov dword ptr [ebx + PCB_STATE], 0
    mov byte ptr [need_switch], 1
    pop ebp
    ret

# write(buffer in ebx, length in ecx) -> eax = bytes written, or -1 for a bad pointer
sys_write:
    mov esi, [ebp + F_EBX]
    mov ecx, [ebp + F_ECX]
    call check_user_range
    jc sys_bad
    mov [ebp + F_EAX], ecx
    CONSOLE_WRITE
    pop ebp
    ret

# check_user_range(esi = start, ecx = length): CF set when [esi, esi+ecx) leaves user space
check_user_range:
    cmp esi, USER_BASE
    jb 1f
    mov eax, esi
    add eax, ecx
    jc 1f
    cmp eax, HEAP_END
    ja 1f
    clc
    ret
1:  stc
    ret

sys_getpid:
    mov ebx, [current]
    mov eax, [ebx + PCB_PID]
    mov [ebp + F_EAX], eax
    pop ebp
    ret

sys_yield:
    mov byte ptr [need_switch], 1
    mov dword ptr [ebp + F_EAX], 0
    VM_YIELD
    pop ebp
    ret

# map(address in ebx): a fresh zeroed, writable page at that heap address
sys_map:
    mov eax, [ebp + F_EBX]
    call map_heap_page
    mov [ebp + F_EAX], eax
    pop ebp
    ret

# unmap(address in ebx): remove the heap page's mapping (and its TLB entry)
sys_unmap:
    mov eax, [ebp + F_EBX]
    call heap_pte
    jc sys_bad
    SET_PTE [edx], 0
    FLUSH_PAGE eax
    mov dword ptr [ebp + F_EAX], 0
    pop ebp
    ret

# setpte(address in ebx, writable in ecx): change a heap page's R/W bit, then invlpg
sys_setpte:
    mov eax, [ebp + F_EBX]
    call heap_pte
    jc sys_bad
    mov ecx, [edx]
    test ecx, PG_P
    jz sys_bad
    and ecx, ~PG_W
    cmp dword ptr [ebp + F_ECX], 0
    je 1f
    or ecx, PG_W
1:  SET_PTE [edx], ecx
    FLUSH_PAGE eax
    mov dword ptr [ebp + F_EAX], 0
    pop ebp
    ret

# read(buffer in ebx, length in ecx): bytes from the input device, polling its status port
# -> eax = bytes read (stops early when no input is waiting)
sys_read:
    mov edi, [ebp + F_EBX]
    mov ecx, [ebp + F_ECX]
    mov esi, edi
    call check_user_range
    jc sys_bad
    xor edx, edx
1:  cmp edx, ecx
    jae 2f
    INPUT_BYTE 2f
    mov [edi + edx], al
    inc edx
    jmp 1b
2:  mov [ebp + F_EAX], edx
    pop ebp
    ret

# onfault(handler in ebx): where a divide error in this process continues (0 = kill it)
sys_onfault:
    mov eax, [ebp + F_EBX]
    mov ebx, [current]
    mov [ebx + PCB_ONFAULT], eax
    mov dword ptr [ebp + F_EAX], 0
    pop ebp
    ret

# ticks() -> eax = timer interrupts so far
sys_ticks:
    mov eax, [ticks]
    mov [ebp + F_EAX], eax
    pop ebp
    ret

# selfmod(n in ebx) -> eax = sum of n calls of alt_value(), the first half before and the second
# half after the kernel patches alt_value's immediate operand (as Linux's alternatives do)
sys_selfmod:
    mov ecx, [ebp + F_EBX]
    shr ecx, 1
    xor edi, edi
    push ecx
1:  call alt_value
    add edi, eax
    dec ecx
    jnz 1b
    mov byte ptr [alt_value + 1], 2     # patch: "mov eax, 1" becomes "mov eax, 2"
    pop ecx
2:  call alt_value
    add edi, eax
    dec ecx
    jnz 2b
    mov byte ptr [alt_value + 1], 1     # put it back for the next caller
    mov [ebp + F_EAX], edi
    pop ebp
    ret
alt_value:
    mov eax, 1                          # B8 01 00 00 00: byte 1 is the immediate
    ret

# ---- paging helpers ------------------------------------------------------------------------
# heap_pte(address in eax) -> edx = address of its PTE; CF set when outside the heap
heap_pte:
    cmp eax, HEAP_BASE
    jb 1f
    cmp eax, HEAP_END
    jae 1f
    and eax, 0xFFFFF000
    mov edx, eax
    sub edx, HEAP_BASE
    shr edx, 10                         # (address - HEAP_BASE) / 4096 * 4
    mov ecx, [current]
    add edx, [ecx + PCB_PT2]
    clc
    ret
1:  stc
    ret

# map_heap_page(address in eax) -> eax = 0, or -1 when outside the heap
map_heap_page:
    push ebx
    mov ebx, eax
    call heap_pte
    jc 1f
    push edx
    call alloc_frame
    pop edx
    PHYS_TO_MACHINE eax
    or eax, PG_P | PG_W | PG_U
    SET_PTE [edx], eax
    and ebx, 0xFFFFF000
    FLUSH_PAGE ebx
    xor eax, eax
    pop ebx
    ret
1:  mov eax, -1
    pop ebx
    ret

# ---- exceptions ----------------------------------------------------------------------------------
# Page fault: a not-present page in the heap is mapped on demand and the instruction restarts;
# anything else is a fault of the process.
do_page_fault:
    test dword ptr [ebp + F_ERR], 1     # present bit: a protection fault is not demand paging
    jnz do_fault
    READ_CR2 eax
    cmp eax, HEAP_BASE
    jb do_fault
    cmp eax, HEAP_END
    jae do_fault
    call map_heap_page
    inc dword ptr [demand_faults]
    pop ebp
    ret

# Divide error: continue at the process's registered handler, if any
do_divide_error:
    test dword ptr [ebp + F_CS], 3
    jz kernel_fault
    mov ebx, [current]
    mov eax, [ebx + PCB_ONFAULT]
    test eax, eax
    jz do_fault
    mov [ebp + F_EIP], eax
    pop ebp
    ret

# any other exception: a fault in the kernel is fatal; a user process is killed (fault_hook.s)
do_fault: .include "fault_hook.s"
    test dword ptr [ebp + F_CS], 3
    jz kernel_fault
    mov esi, offset msg_killed
    call kputs
    mov ebx, [current]
    mov eax, [ebx + PCB_PID]
    call kputdec
    mov esi, offset msg_exception
    call kputs
    mov eax, [ebp + F_VEC]
    call kputdec
    mov esi, offset msg_at
    call kputs
    mov eax, [ebp + F_EIP]
    call kputhex
    mov al, 10
    KPUTC
    mov ebx, [current]
    mov dword ptr [ebx + PCB_STATE], 0
    mov byte ptr [need_switch], 1
    pop ebp
    ret

kernel_fault:
    mov esi, offset msg_panic
    call kputs
    mov eax, [ebp + F_VEC]
    call kputdec
    mov esi, offset msg_at
    call kputs
    mov eax, [ebp + F_EIP]
    call kputhex
    mov al, 10
    KPUTC
    mov eax, 1
    jmp power_off_code

# ---- scheduler -------------------------------------------------------------------------------------
# pick_next() -> eax = the next runnable PCB after the current one (round robin); powers off
# when no process is left
pick_next:
    mov eax, [current]
    mov ecx, MAX_PROCS
1:  add eax, PCB_SIZE
    cmp eax, offset pcbs + PCB_SIZE * NPROC
    jb 2f
    mov eax, offset pcbs
2:  cmp dword ptr [eax + PCB_STATE], 1
    je 3f
    dec ecx
    jnz 1b
    jmp power_off                       # everybody has exited
3:  ret

power_off:
    xor eax, eax
power_off_code:
    POWER_OFF

# ---- console output (kernel side) -----------------------------------------------------------
kputs:                                  # esi = NUL-terminated string
    mov al, [esi]
    test al, al
    jz 1f
    KPUTC
    inc esi
    jmp kputs
1:  ret

kputdec:                                # eax = unsigned number, printed in decimal
    push ebx
    push edx
    mov ebx, 10
    xor ecx, ecx
1:  xor edx, edx
    div ebx
    push edx
    inc ecx
    test eax, eax
    jnz 1b
2:  pop eax
    add al, '0'
    KPUTC
    dec ecx
    jnz 2b
    pop edx
    pop ebx
    ret

kputhex:                                # eax = number, printed as 0x%08x
    push ebx
    mov ebx, eax
    mov al, '0'
    KPUTC
    mov al, 'x'
    KPUTC
    mov ecx, 8
1:  rol ebx, 4
    mov eax, ebx
    and eax, 0xF
    mov al, [hexdigits + eax]
    KPUTC
    dec ecx
    jnz 1b
    pop ebx
    ret

.include "pvops_impl.s"           # what the paravirtual macros call (nothing natively)

# ---- data ------------------------------------------------------------------------------------------
.data
.align 8
gdt:
    .long 0, 0                          # null descriptor
# Code and data descriptors are created with their accessed bit already set (type 0xB / 0x3),
# as Linux does, so the processor never has to write to this table on a segment load.
    .long 0x0000FFFF, 0x00CF9B00        # 0x08 ring-0 code, flat 4 GiB
    .long 0x0000FFFF, 0x00CF9300        # 0x10 ring-0 data
    .long 0x0000FFFF, 0x00CFFB00        # 0x18 ring-3 code
    .long 0x0000FFFF, 0x00CFF300        # 0x20 ring-3 data
    .long 0x00000067, 0x00008900        # 0x28 TSS (base patched by setup_tss), 104 bytes
gdt_end:
gdt_ptr:
    .word gdt_end - gdt - 1
    .long gdt
idt_ptr:
    .word 256 * 8 - 1
    .long idt

stub_table:
    .long stub_de, stub_db, stub_nmi, stub_bp, stub_of, stub_br, stub_ud, stub_nm
    .long stub_df, stub_9, stub_ts, stub_np, stub_ss, stub_gp, stub_pf, stub_15
    .long stub_mf, stub_ac, stub_mc, stub_xm

current:      .long 0                   # PCB of the running process
next_frame:   .long FRAMES_BASE
ticks:        .long 0
demand_faults: .long 0
need_switch:  .byte 0

hexdigits:    .ascii "0123456789abcdef"
msg_oom:      .asciz "kernel: out of physical frames\n"
msg_killed:   .asciz "kernel: process "
msg_exception: .asciz " killed by exception "
msg_at:       .asciz " at "
msg_panic:    .asciz "kernel panic: exception "

.align 4
tss:          .space 104
pcbs:         .space PCB_SIZE * MAX_PROCS

.align 4096
idt:          .space 256 * 8
.align 4096
kernel_pt:    .space 4096
kstacks:      .space 4096 * MAX_PROCS
              .space 4096
boot_stack_top:
