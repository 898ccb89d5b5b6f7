"""Routing: which member of a model pool should answer, from its predicted success?

``rules`` (the threshold cascade and utility argmax, pure functions), ``evaluation`` (single
members, random, oracle, routing cost, frontiers, paired intervals), ``pool`` (a profile's pool,
each member with its rollouts and probe), ``reader`` (one small model's probes for every member),
``router`` (a saved Router applied to new questions), ``crossfit`` (every problem scored and
routed by probes and settings that never saw it; ``ridge``, its closed-form probes with an
intercept, chosen by inner k-fold), ``seeds`` (intervals pooled over fold seeds), ``recorded``
(the recorded pool: models known by their graded outcomes, routed by one small reader) and
``recorded_results`` (what chapters 6 and 7 ask of it), ``kept`` (the Router chapter 6 keeps for
the recorded members, fitted on every problem) with its ``detector`` (how far a question lies
from the training questions), ``judge`` (a kept Router judged on a labelled outcome log: ``pika
route --evaluate``) and ``transfer`` (the kept Router and its probes on a benchmark they never
saw). Chapters 3 (reader), 5, 6, 7.
Imports: everything below it (``core`` to ``probes``)."""
