"""The instruction the model gets, and the chat-templated prompt built from a report's text."""

from __future__ import annotations

from typing import Any

# Short on purpose: every training example and every generation pays for it (the answer format is learned from
# the examples, not from the instruction).
SYSTEM_PROMPT = "Banking supervisor: check the report against the prudential rules; write ANALYSIS and DIRECTIVE."


def build_messages(report_text: str) -> list[dict[str, str]]:
    """Chat messages for one report: the short system instruction, then the report as the user turn."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": report_text}]


def render_prompt(tokenizer: Any, report_text: str) -> str:
    """The prompt string the model is trained and evaluated on (chat template, generation prompt included)."""
    return tokenizer.apply_chat_template(build_messages(report_text), tokenize=False, add_generation_prompt=True)
