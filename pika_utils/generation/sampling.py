"""What a rollout is made of: the sampling settings that key a run, and one completion. Kept
below the backends and budget forcing, which both build on them."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

#: Sampling fields that only matter with a reasoning budget (left out of the key without one).
BUDGET_FIELDS = ("budget", "answer_cue", "answer_tokens", "answer_temperature", "think_close")


@dataclass(frozen=True)
class SamplingConfig:
    """Everything about sampling that changes the rollouts (and so the run's key)."""

    k: int = 8
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 16
    prompt_suffix: str = ""
    system_prompt: str | None = None
    seed: int = 0
    chunk_size: int = 16  # problems per chunk (and per generate call)
    stop: tuple[str, ...] = ()  # end a sample at the first of these strings (e.g. "\n": one answer line)
    # budget forcing (chapter 7): think for at most `budget` tokens, then close the thought,
    # append the answer cue and generate at most `answer_tokens`; None: plain sampling
    budget: int | None = None
    answer_cue: str = "\nFinal answer: "
    answer_tokens: int = 8
    answer_temperature: float = 0.0
    think_close: str = ""  # e.g. "\n</think>\n\n" for models with a thinking section

    def key(self) -> dict:
        """The fields that determine the rollouts (budget fields only when a budget is set)."""
        d = dataclasses.asdict(self)
        return {k: v for k, v in d.items()
                if (self.budget is not None or k not in BUDGET_FIELDS) and not (k == "stop" and not v)}

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if isinstance(self.stop, str) or any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop must be a tuple of non-empty strings, got {self.stop!r}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.temperature == 0 and self.k > 1:
            raise ValueError("temperature 0 is greedy: all k samples would be identical; use k=1")
        if self.budget is not None and self.budget < 0:
            raise ValueError(f"reasoning budget must be >= 0 tokens, got {self.budget}")
        if self.budget is not None and self.answer_tokens < 1:
            raise ValueError(f"answer_tokens must be >= 1 with a budget, got {self.answer_tokens}")


@dataclass
class Completion:
    text: str
    output_tokens: int
    finish_reason: str  # "stop" (end of sequence) or "length" (hit max_new_tokens)
    thinking_tokens: int = 0  # budget forcing: tokens of thought before the answer cue
    answer_tokens: int | None = None  # budget forcing: tokens after the cue (else output_tokens)
    budget_hit: bool = False
    answer_text: str | None = None  # the part that is graded (budget forcing: after the cue)

