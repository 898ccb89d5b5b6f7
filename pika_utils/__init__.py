"""Shared code for the book, in one subpackage per stage (imports point down this list only):

core -> grading, models -> problems, activations -> generation, probes -> routing, backtracking,
recoverability, coding -> book -> cli (the ``pika`` command)."""
import logging

# A library logs, its user decides what to show: the command line prints these records, a
# chapter states where its models and data came from in one provenance note instead.
logging.getLogger(__name__).addHandler(logging.NullHandler())

import os as _os
import warnings as _warnings

if _os.environ.get("PIKA_PROGRESS", "").strip() == "0":
    # Executed chapters draw no progress bars (the runner sets PIKA_PROGRESS=0), so tqdm's note
    # that the widget library is missing for them says nothing to a reader.
    _warnings.filterwarnings("ignore", message="IProgress not found")
