"""The hypercall ABI the paravirtual kernel and the hypervisor share: the vector, the hypercall
numbers (their twins are in ``vmkit/guests/pvops_pv.s``), the commands, the errno values, the
layout of ``vcpu_info``, and the refusal a hypercall returns. The paging commands, their
errno values and the refusal are defined with validated direct paging
(:mod:`vmkit.vmm.paging.direct`) and re-exported here."""

from __future__ import annotations

import struct

from vmkit.vmm.paging.direct import (EINVAL, EPERM, MAX_BATCH,  # noqa: F401
                                     MMUEXT_INVLPG_LOCAL, MMUEXT_NEW_BASEPTR,
                                     MMUEXT_PIN_L1_TABLE, MMUEXT_PIN_L2_TABLE, _Refused)

HYPERCALL_VECTOR = 0x82
#: hypercall number -> name: Xen's numbers (xen/include/public/xen.h, ``__HYPERVISOR_*``; the
#: guest's copy is in vmkit/guests/pvops_pv.s). sched_op and event_channel_op are the current
#: ABI's (29, 32), not the compat calls 6 and 16 of interfaces before 3.1.1 and 3.2.2
HYPERCALLS = {0: "set_trap_table", 1: "mmu_update", 2: "set_gdt", 3: "stack_switch",
              15: "set_timer_op", 18: "console_io", 24: "vcpu_op", 26: "mmuext_op",
              29: "sched_op", 32: "event_channel_op"}
EFAULT, ENOSYS = 14, 38                           # Linux/Xen errno values (EPERM, EINVAL above)
# sub-commands, as Xen numbers them (event_channel.h, vcpu.h, sched.h; mmuext_op's above)
CONSOLEIO_WRITE, CONSOLEIO_READ = 0, 1
SCHEDOP_YIELD, SCHEDOP_BLOCK, SCHEDOP_SHUTDOWN = 0, 1, 2
EVTCHNOP_BIND_VIRQ, EVTCHNOP_SEND = 1, 4
VCPUOP_REGISTER_VCPU_INFO = 10
VI_PENDING, VI_MASK, VI_CR2, VI_MACHINE_BASE = 0, 1, 8, 12
MAX_CONSOLE = 1 << 16
IF = 0x200

_Q = struct.Struct("<Q")
_I = struct.Struct("<I")
