"""``raft-manager chaos``: a Jepsen-style run against real ``raft-node`` processes.

``workload`` (clients and the history), ``schedule`` (the seeded fault plan),
``nemesis`` (injecting it), ``checks`` (linearizability, lost writes), ``timeline``
(the HTML/SVG picture), ``summary`` (the table for people), ``runner`` (all of it,
start to verdict).
"""

from .models import ChaosVerdict
from .runner import ChaosOptions, run_chaos

__all__ = ["ChaosOptions", "ChaosVerdict", "run_chaos"]
