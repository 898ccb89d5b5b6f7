"""Generation: K sampled rollouts per problem, graded, stored in resumable chunks.

``sampling`` (the settings that key a run), ``backends`` (transformers with a shared prefill,
vLLM), ``budget`` (budget forcing for chapter 7), ``rollouts`` (the resumable, graded run),
``pipeline`` (what a chapter calls: a profile's problem set, rollouts and activations).
Chapters 1, 2, 5-10. Imports: ``core``, ``grading``, ``problems``, ``models``, ``activations``."""
