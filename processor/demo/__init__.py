"""A simulated shop with an LLM shopping agent that writes labelled trace datasets.

``faulttrace demo --write-dataset DIR`` runs it: services (``topology``,
``shop``, the agents in ``agent``) call each other (``calls``) on a
simulated clock (``simtrace``), healthy or with one of the fault kinds of
``faults`` active, and ``writer`` writes the traces and their ground truth in
the layout ``faulttrace eval`` reads.  See docs/demo.md.
"""

from processor.demo.faults import KINDS, FaultKind
from processor.demo.writer import Written, write_dataset

__all__ = ["KINDS", "FaultKind", "Written", "write_dataset"]
