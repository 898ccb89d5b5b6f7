"""Problems: one table for every source, its splits, and the files users bring.

``table`` (schema, validation, seeded stratified splits), ``sources`` (offline sources shipped in
packages: the arithmetic ladder, products, MMATH, GSM8K, MATH-500 levels), ``hub_sources`` (the
paper's hub datasets), ``code`` (HumanEval, LiveCodeBench, MBPP), ``reading`` (a JSONL, JSON, CSV
or Parquet table read within size limits), ``files`` (checking a user's problem file),
``recorded`` (all 500 MATH-500 problems and five large models' graded answers to them, and three
of them on OlympiadBench's 675, checksummed; a log of several members' outcomes), ``outcomes`` (a
user's outcomes file, checked row by row), ``tasks`` (``load_problems``: the one entry point).
Chapters 1, 4, 6-8, 10 and every command that takes ``--problems``. Imports: ``core``, ``grading``,
``models`` (a model's tokenizer and context, read before it loads)."""
