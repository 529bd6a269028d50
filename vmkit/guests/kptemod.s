# kptemod: the *kernel* stores a page table entry, again and again, as Adams & Agesen's ptemod
# nanobenchmark did in their test kernel (ASPLOS 2006, §6.3: "repeatedly modifies a guest page
# table entry"; "ptemod: unchanged", the page stays present: 1 cycle natively, a single store).
# No system call and no invlpg per store: the guest kernel writes its own page table.
#
# The entry is the first process's stack page (its page table PCB_PT1, entry 1023), a page in
# use: the kernel reads it first (so a monitor with traced shadow page tables has a shadow of
# that page table, and traces it, as A&A's VMMs had for their test page). Each store
# flips the entry's R/W bit (what a fork does to a parent's page for copy-on-write), eight
# stores an iteration (one loop overhead per eight). Nothing touches the page meanwhile; the
# entry is put back and its TLB entry flushed at the end, so every monitor ends in the same state.
# Under shadow paging with traces each store is a trace fault (te), a VM exit (hw-shadow) or,
# once adapted, a short in-TC sequence (bt); the virtual-TLB shadow does not see the stores.
#
# Included by kernel.s (boot_hook.s) before the first process starts: ring 0, interrupts off.
.include "params.s"             # ITERATIONS

    mov ebx, [current]
    mov edx, [ebx + PCB_PT1]
    add edx, 1023*4             # the stack page's entry (the kernel maps physical 0-4 MiB 1:1)
    mov eax, [USER_STACK_TOP - 4]   # the page is in use
    mov eax, [edx]              # as it is
    mov ebx, eax
    xor ebx, PG_W               # R/W flipped
    mov ecx, ITERATIONS
1:  SET_PTE [edx], ebx
    SET_PTE [edx], eax
    SET_PTE [edx], ebx
    SET_PTE [edx], eax
    SET_PTE [edx], ebx
    SET_PTE [edx], eax
    SET_PTE [edx], ebx
    SET_PTE [edx], eax          # back as it was
    dec ecx
    jnz 1b
    mov eax, USER_STACK_TOP - PAGE
    FLUSH_PAGE eax
    mov esi, offset kp_msg
    call kputs
    mov eax, ITERATIONS * 8
    call kputdec
    mov al, 10
    KPUTC
    jmp kp_done

.data
kp_msg: .asciz "kptemod: PTE stores "
.text
kp_done:
