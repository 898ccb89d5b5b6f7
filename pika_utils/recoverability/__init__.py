"""Chapter 9: which failed rollouts are recoverable (Islah et al., arXiv 2606.05145)?

``features`` (junction scores, the three problem features, regimes, the routing rule: numpy
only), ``run`` (teacher-forced scores and the seeded interventions on a model).
Imports: ``core``, ``grading``, ``models``, ``generation``."""
