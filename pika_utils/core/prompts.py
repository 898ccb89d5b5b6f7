"""How a problem becomes a prompt. Rollouts and activation extraction must see the very same
prompt text, so both build it here."""
from __future__ import annotations

from typing import Sequence

#: The paper's instruction for math problems.
PAPER_SUFFIX = "Let's think step by step and output the final answer within \\boxed{}."
#: Short direct answers, for small models on a CPU.
DIRECT_SUFFIX = "Reply with just the number."
#: Code problems (chapter 10): a complete function in one fenced block, graded by its tests.
CODE_SUFFIX = ("Write the complete Python function, with any imports it needs, in one ```python code block. "
               "No explanation, no tests.")


def user_message(question: str, suffix: str = "") -> str:
    """The user's turn: the question, then the instruction suffix on its own line."""
    question = question.strip()
    return f"{question}\n{suffix.strip()}" if suffix.strip() else question


def chat_prompt(tokenizer, question: str, suffix: str = "", system_prompt: str | None = None) -> str:
    """The full prompt string after the chat template, ending with the generation prompt, so
    the last tokens are the end-of-instruction tokens that the probes read."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!r} has no chat template; "
            "use an instruct model or set tokenizer.chat_template"
        )
    messages = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": user_message(question, suffix)})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def chat_prompts(tokenizer, questions: Sequence[str], suffix: str = "", system_prompt: str | None = None) -> list[str]:
    return [chat_prompt(tokenizer, q, suffix, system_prompt) for q in questions]

#: Chapter 8: the check-and-redo instruction. The workshop's small instruct models have no
#: trained reasoning mode, so they are *asked* to check each step and, when a step is wrong, to
#: say so ("Wait, ...") and redo it. Backtracking here is prompted, not spontaneous; the chapter
#: says so. Reasoning models (R1-style, `paper`) get the plain paper suffix and backtrack on their own.
CHECK_AND_REDO_SUFFIX = (
    "Solve it step by step, one short step per line. After each step, check it. When a step is "
    "wrong, start a new line with \"Wait,\" explain the mistake and redo the step. End with the "
    "final answer within \\boxed{}."
)
