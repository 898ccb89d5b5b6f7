"""Grading: is an answer right? One grader per domain and the one place that picks it.

``maths`` (extract a final answer and compare it with gold; ``verify_worker`` runs math-verify
in a subprocess with a deadline), ``code`` (run a program against its tests in the ``sandbox``,
keep the reason), ``by_domain`` (pick by the problem's domain). Chapters 1, 7, 9, 10.
Imports: ``core``."""
