# vmkit guest ABI: numbers shared by the kernel and user programs (see docs/guest-abi.md)

# ports (vmkit.machine.devices)
.equ CONSOLE, 0xE9              # write a byte: it appears on the console
.equ PIC_CMD, 0x20              # write 0x20: end of interrupt
.equ PIC_MASK, 0x21             # bit n set = IRQ n masked
.equ TIMER_PORT, 0x40           # timer period in guest instructions (0 = off)
.equ CLOCK_PORT, 0x41           # read: guest time
.equ INPUT_DATA, 0x60           # read the next input byte
.equ INPUT_STATUS, 0x64         # bit 0: an input byte is waiting
.equ POWEROFF, 0xF4             # write: the machine powers off (value = exit code)

# system calls: int 0x80 with the number in eax, arguments in ebx, ecx, edx; result in eax
.equ SYS_EXIT, 1                # exit(code)
.equ SYS_WRITE, 2               # write(buffer, length) -> bytes written
.equ SYS_GETPID, 3              # getpid() -> pid (1, 2, ...)
.equ SYS_YIELD, 4               # yield() -> 0: let the next process run
.equ SYS_MAP, 5                 # map(address) -> 0: a fresh zeroed page in the heap
.equ SYS_UNMAP, 6               # unmap(address) -> 0
.equ SYS_SETPTE, 7              # setpte(address, writable) -> 0: change a page's R/W bit
.equ SYS_READ, 8                # read(buffer, length) -> bytes read from the input device
.equ SYS_ONFAULT, 9             # onfault(handler): where a divide error continues
.equ SYS_SELFMOD, 10            # selfmod(n) -> sum of n calls of a kernel routine patched halfway
.equ SYS_TICKS, 11              # ticks() -> timer interrupts so far
.equ SYSCALL_COUNT, 12
# added by the forkwait guest's kernel only (vmkit/guests/fork.s), numbered from SYSCALL_COUNT
.equ SYS_FORK, 12               # fork() -> child's pid in the parent, 0 in the child, -1
.equ SYS_WAIT, 13               # wait(pid) -> pid once that child has exited, -1

.equ HEAP, 0x00800000           # start of the demand-paged heap (4 MiB)
