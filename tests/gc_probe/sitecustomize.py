"""Test probe: a process started with this folder on PYTHONPATH reports its cyclic garbage.

On SIGUSR1 it runs a full garbage collection that keeps what it finds,
writes a JSON report to the file named by ``PRIM_TEST_GC_REPORT``, and lets
the objects go. The report contains the number of unreachable objects and the
most common types among them. Only tests start processes with it.
"""

import collections
import gc
import json
import os
import signal

REPORT = os.environ.get("PRIM_TEST_GC_REPORT")


def _report(signum, frame) -> None:
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = list(gc.garbage)
        gc.garbage.clear()
    finally:
        gc.set_debug(0)
    kinds = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in found)
    del found
    partial = REPORT + ".part"
    with open(partial, "w") as file:
        json.dump({"unreachable": sum(kinds.values()), "types": kinds.most_common(20)}, file)
    os.replace(partial, REPORT)


if REPORT:
    signal.signal(signal.SIGUSR1, _report)
