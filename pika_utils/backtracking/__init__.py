"""Chapter 8: does a reader's state at token t anticipate backtracking at t + lag?

``labels`` (which sentences of a chain backtrack), ``chains`` (sampled, labelled, read chains),
``backtracking.lag_probes`` (token-level probes at lags, with token-identity and position baselines).
Imports: ``core``, ``models``, ``activations``, ``generation``."""
