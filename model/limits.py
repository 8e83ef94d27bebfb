"""The prover's solver limits (no Z3 import: the CLI reads them to describe its options)."""

# Solver limits are Z3 resource units (rlimit), not seconds: the same query gets the same budget and
# so the same verdict on an idle or a loaded machine. Calibrated on the bundled spec (bench/prove.py
# and a per-check census): its hardest proof took 0.4 M units (0.14 s) before the vCPUs, roles and
# unsync pages, and now about 1.5 s within COUNTS_RLIMIT (below); Z3 runs about 2-3 M units per
# second on one core here. The wall-clock timeout stays only as a backstop against a query the
# resource count does not see.
RLIMIT = 30_000_000  # per check: about 10 s idle
# The first attempt at an inductive goal, without the count axioms (about 0.3 s); also the budget of
# the shared pass that assumes only the invariants related to the goal's (prove.py's QUICK_PASS).
QUICK_RLIMIT = 1_000_000
# The same first attempt on an action's shared incremental solver (check_action), where goals that
# need no count axioms mostly take a few thousand units (the bundled spec: at most 8 k; mypyvy's
# paxos_forall: 95% within 40 k, one 0.26 M): a goal still open after this gets a fresh solver (with
# the count axioms) sooner. At 1 M, the bundled spec's nine goals that need the count axioms spent
# 3.3 s of its 6 s here before getting them; on paxos_forall two goals that a fresh solver proves in
# 30 ms each spent 0.44 s.
INCREMENTAL_QUICK_RLIMIT = 100_000
# The last shared pass, with the count axioms: most proofs there take well under 0.1 s, the bundled
# spec's hardest (sync_spte / guest_pt_protected) 1.5 s; a goal still open after this is more likely
# violated, and the full path looks for a finite counterexample first (about 2 s). A goal that needs
# fewer hypotheses, not the counts, can spend this whole budget here in vain (2.5 to 4 s each for six
# walk_protected goals of the bundled spec): the related pass before it proves those first.
COUNTS_RLIMIT = 6_000_000
BACKSTOP = 120.0  # seconds per check, only for what the resource limit misses
# Seconds `dmm prove` searches for an execution reaching its counterexamples to induction (all of
# them share one search: reachable.py). The bundled spec's seeded bugs are reached in 0.03 to 4.3 s.
REACH_SECONDS = 5.0
# Runs of at most this many actions `dmm prove` searches for each witness (witness.py); none found
# within it is unknown beyond it, never "unreachable".
WITNESS_DEPTH = 8
