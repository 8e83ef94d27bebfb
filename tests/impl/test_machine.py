"""Page descriptors and pools: the lists are real doubly linked lists, and every move keeps a page
on exactly one of them, with status and owner in step."""

from __future__ import annotations

import random

import pytest

from dmmcheck.impl.machine import FREE, MAPPED, RESERVED, Machine, PoolError


def lists_of(m: Machine, mfn: int) -> list[str]:
    names = []
    for name, lst in [("vmm", m.vmm_pool)] + [(f"active:{v}", l) for v, l in m.active.items()] + \
            [(f"idle:{v}", l) for v, l in m.idle.items()]:
        if mfn in set(lst):
            names.append(name)
    if mfn >= m.fresh:
        names.append("vmm")
    return names


def check_structure(m: Machine) -> None:
    # Walk every list forwards and backwards; each page on exactly one list, matching its descriptor.
    for lst in [m.vmm_pool, *m.active.values(), *m.idle.values()]:
        fwd = list(lst)
        back, mfn = [], lst.tail
        while mfn != -1:
            back.append(mfn)
            mfn = m.desc[mfn].prev
        assert fwd == back[::-1] and len(fwd) == len(lst)
    for mfn in range(m.first_mfn, m.first_mfn + m.count):
        where = lists_of(m, mfn)
        assert len(where) == 1, (mfn, where)
        assert m.pool_of(mfn) == where[0]


def test_random_moves_keep_structure():
    rng = random.Random(4)
    m = Machine(0x100, 40)
    for v in range(3):
        m.add_vm(v)
    mapped: list[int] = []
    for _ in range(2000):
        op = rng.choice(["grow", "shrink", "alloc", "release"])
        v = rng.randrange(3)
        if op == "grow":
            m.grow(v)
        elif op == "shrink" and len(m.idle[v]):
            m.shrink(v, rng.choice(list(m.idle[v])))
        elif op == "alloc":
            mfn = m.allocate(v)
            if mfn is not None:
                assert m.desc[mfn].status == MAPPED and m.desc[mfn].owner == v
                mapped.append(mfn)
        elif op == "release" and mapped:
            mfn = mapped.pop(rng.randrange(len(mapped)))
            m.desc[mfn].refcount = 0
            m.release(mfn, to_vmm=rng.random() < 0.5)
    check_structure(m)
    total = m.vmm_free() + sum(len(l) for l in m.active.values()) + sum(len(l) for l in m.idle.values())
    assert total == 40  # conservation


def test_allocation_order_idle_then_vmm():
    m = Machine(0x100, 10)
    m.add_vm(0)
    reserved = m.grow(0)
    assert m.desc[reserved].status == RESERVED
    assert m.allocate(0) == reserved  # the idle list first
    other = m.allocate(0)
    assert other != reserved and m.desc[other].owner == 0


def test_out_of_memory_is_none():
    m = Machine(0x100, 2)
    m.add_vm(0)
    assert m.allocate(0) is not None and m.allocate(0) is not None
    assert m.allocate(0) is None


def test_moves_that_would_break_a_pool_raise():
    m = Machine(0x100, 4)
    m.add_vm(0)
    mfn = m.allocate(0)
    with pytest.raises(PoolError):
        m.shrink(0, mfn)  # not on the idle list
    with pytest.raises(PoolError):
        m.release(mfn)  # still referenced
    assert m.desc[0x103].status == FREE and m.pool_of(0x103) == "vmm"


def test_memory_grows_with_pages_touched():
    m = Machine(0x100, 1 << 20)  # 4 GiB of machine memory
    m.add_vm(0)
    for _ in range(100):
        m.allocate(0)
    assert len(m.desc) == 100 and m.vmm_free() == (1 << 20) - 100
