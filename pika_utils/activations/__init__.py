"""Activations: the residual stream read with nnsight, before the model writes.

``eoi`` (every layer at the end-of-instruction tokens, stored in checked chunks), ``batches``
(EOI tokens, token ids, fixed or token-budget batches, left padding), ``activations.prefill_read`` (the same
vectors taken from sampling's own prefill, so a prompt runs once), ``tokens`` (every token of a
chain, for chapter 8). Chapters 2-10. Imports: ``core``."""
