# pv_refusal.s: boot hook of the "pv-refusal" guest (paravirtual only). The paravirtual kernel,
# in ring 1 with its page tables validated and loaded, asks the hypervisor for two page table
# updates that would break isolation, and prints the answers:
#
#   1. map a machine frame that is not the VM's own (machine address 0: the hypervisor's area)
#      at the first heap page of process 1;
#   2. make one of its own page tables (process 1's program page table) writable in kernel_pt,
#      which would let the kernel change mappings behind the hypervisor's back.
#
# Both are refused with -EPERM (-1) and counted (stats["hypercall_refusals"]); neither entry
# changes. A plain store into a page table would be a page fault instead: the kernel maps its
# page tables read-only once the hypervisor has validated them.

    mov ebx, [current]
    mov eax, [ebx + PCB_PT2]            # the heap's page table (physical)
    mov [pvr_req], eax                  # entry 0: heap page 0x00800000
    mov dword ptr [pvr_req + 4], PG_P | PG_W | PG_U    # machine frame 0: not this VM's
    mov ebx, offset pvr_req
    mov ecx, 1
    mov edx, -1
    HYPERCALL HC_MMU_UPDATE
    mov [pvr_result1], eax

    mov ebx, [current]
    mov eax, [ebx + PCB_PT1]            # the program's page table (physical)
    mov edx, eax
    shr eax, 12
    lea eax, [kernel_pt + eax*4]        # its entry in the kernel's identity map
    mov [pvr_req], eax
    add edx, [vcpu_info + VI_MACHINE_BASE]
    or edx, PG_P | PG_W                 # ... made writable
    mov [pvr_req + 4], edx
    mov ebx, offset pvr_req
    mov ecx, 1
    mov edx, -1
    HYPERCALL HC_MMU_UPDATE
    mov [pvr_result2], eax

    mov esi, offset pvr_msg1
    call kputs
    mov eax, [pvr_result1]
    neg eax
    call kputdec
    mov esi, offset pvr_msg2
    call kputs
    mov eax, [pvr_result2]
    neg eax
    call kputdec
    mov al, 10
    KPUTC
    jmp pvr_done

.data
.align 4
pvr_req:      .long 0, 0
pvr_result1:  .long 0
pvr_result2:  .long 0
pvr_msg1:     .asciz "pv-refusal: map a foreign frame -> error -"
pvr_msg2:     .asciz "; make a page table writable -> error -"
.text
pvr_done:
