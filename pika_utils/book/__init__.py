"""The book itself: profiles in, executed chapters and their verdicts out.

``runner`` (a profile's parameters -> papermill -> Jupyter Book), ``params`` (every profile key,
typed, and each chapter's share), ``plan`` (plan mode: check a profile, estimate its cost),
``verdicts`` (claims, intervals and the rule that decides them), ``provenance`` (one note per
chapter on where models and data came from), ``plots`` (one figure style), ``preflight`` (what the
machine must have before chapter 1), ``resources`` (peak memory, free memory and disk),
``front_page`` (the run summary and findings), ``environment`` (the lock and the pip freeze).
Chapters: all (and chapter 11 reads the verdicts). Imports: anything below it."""
