"""Chapter 10: the same questions on code.

``pipeline`` (code problems, graded programs, their activations, probes that cross between maths
and code). Code problems live in ``problems.code``, the sandbox and the grader in ``grading``.
Imports: ``core``, ``generation``, ``probes``."""
