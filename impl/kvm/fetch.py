"""Is it safe to let the guest fetch and run one instruction? (The fetch test: machine.Machine.fetch.)

KVM has no hook between an instruction fetch and its execution, and a code breakpoint (DR0-3)
fires before the fetch's own page walk (SDM Vol. 3A 6.9, "Priority Among Concurrent Exceptions
and Interrupts": a code breakpoint fault ranks above a code page fault), so it cannot test the
translation. The adapter lets the one instruction run instead, single-stepped, with every general
register and RSP holding POISON: an address formed from registers (base + index * scale + disp32)
is then never canonical, and the access raises #GP or #SS without touching memory. What can still
reach memory is decided here, from the bytes the guest's own mapping names (read from the
memslot, for prediction only), and such a fetch is not performed:

- a memory operand with no register in it: RIP-relative, an absolute disp32 (SIB with no base and
  no index), a moffs64 (opcodes A0-A3);
- the address-size prefix 0x67: addresses are then 32 bits wide, and every 32-bit address is
  canonical (string instructions included, whose operands are implicit);
- at CPL 0, privileged instructions (capstone's privilege group: control, debug and descriptor
  table registers, MSRs, lmsw, clts, swapgs, ...) and a load of SS (it would also suppress the
  single-step trap for the next instruction);
- bytes capstone cannot decode (conservatively: an instruction it does not know might address
  memory through RIP).

LEA and multi-byte NOPs with a RIP-relative operand name an address without accessing it: allowed.
"""

from __future__ import annotations

from functools import cache

LEN = 15  # the longest x86 instruction


@cache
def _cs():  # type: ignore[no-untyped-def]
    import capstone
    from capstone import x86 as cx

    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    return md, capstone, cx


def unsafe(code: bytes, user: bool) -> str | None:
    """Why running the instruction at the start of `code` could reach memory or change the
    guest's system state; None when it cannot."""
    md, capstone, cx = _cs()
    insn = next(md.disasm(code[:LEN], 0), None)
    if insn is None:
        return f"bytes {code[:LEN].hex()} do not decode"
    if 0x67 in insn.prefix:
        return f"{insn.mnemonic} {insn.op_str}: 32-bit addresses are canonical"
    if insn.id in (cx.X86_INS_MOVABS,) and any(op.type == cx.X86_OP_MEM for op in insn.operands):
        return f"{insn.mnemonic} {insn.op_str}: an absolute address"
    harmless = insn.id in (cx.X86_INS_LEA, cx.X86_INS_NOP)
    for op in insn.operands:
        if op.type != cx.X86_OP_MEM or harmless:
            continue
        if op.mem.base == cx.X86_REG_RIP:
            return f"{insn.mnemonic} {insn.op_str}: a RIP-relative address"
        if op.mem.base == 0 and op.mem.index == 0:
            return f"{insn.mnemonic} {insn.op_str}: an absolute address"
    if not user:
        if capstone.CS_GRP_PRIVILEGE in insn.groups:
            return f"{insn.mnemonic} {insn.op_str}: a privileged instruction"
        if any(op.type == cx.X86_OP_REG and op.reg == cx.X86_REG_SS for op in insn.operands):
            return f"{insn.mnemonic} {insn.op_str}: a load of SS"
    return None
