"""Probes: does the state before generation predict success or difficulty?

``linear`` (scikit-learn-style ridge and logistic probes, the fast sweep), ``protocol`` (the
paper's protocol against TF-IDF and length baselines, bootstrap intervals, transfer, scoring new
questions), ``files`` (saved probes: safetensors + JSON, checked before a model loads),
``pooled`` (pooled probes over every prompt token), ``difficulty`` (chapter 4: human against the
model's own difficulty). Chapters 3, 4, 10. Imports: ``core``, ``problems``, ``models``,
``activations``."""
