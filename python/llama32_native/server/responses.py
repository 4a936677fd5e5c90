"""OpenAI response shapes: choices and streamed chunks of completions and chat completions, with logprobs.

Contract: pure functions from results/events to JSON-ready dicts; token texts come from the model's
tokenizer (invalid UTF-8 pieces are shown with U+FFFD, their exact bytes in "bytes").
"""

from __future__ import annotations

from typing import Any

from .. import logprobs
from ..generation import Generation, TokenLogprob
from ..tools import ToolPlan
from .scheduler import DoneEvent, TextEvent

__all__ = ["completion_choice", "completion_chunk", "chat_choice", "chat_chunk"]


def completion_logprobs(model: Any, lps: list[TokenLogprob] | None, offset: int = 0) -> dict[str, Any] | None:
    """The legacy completions shape: parallel lists of tokens, their logprobs, top alternatives, text offsets."""
    return logprobs.completion_logprobs(model.tokenizer, lps, offset) if lps else None


def chat_logprobs(model: Any, lps: list[TokenLogprob] | None) -> dict[str, Any] | None:
    """The chat shape: content[] of {token, logprob, bytes, top_logprobs[]}."""
    return None if lps is None else logprobs.chat_logprobs(model.tokenizer, lps)


def completion_choice(index: int, r: dict[str, Any], model: Any, offset: int = 0) -> dict[str, Any]:
    """A completion choice; `offset`: the prompt's length in characters, where text_offset starts (OpenAI's)."""
    return {"index": index, "text": r["text"], "logprobs": completion_logprobs(model, r["logprobs"] or None, offset),
            "finish_reason": r["finish_reason"]}


def completion_chunk(base: dict[str, Any], ev: TextEvent | DoneEvent, model: Any,
                     offsets: dict[int, int] | None = None) -> dict[str, Any]:
    """A streamed completion chunk; `offsets`: each choice's text_offset so far (advanced by the chunk's text)."""
    if isinstance(ev, TextEvent):
        at = 0 if offsets is None else offsets.get(ev.index, 0)
        choice = {"index": ev.index, "text": ev.text, "logprobs": completion_logprobs(model, ev.logprobs, at),
                  "finish_reason": None}
        if offsets is not None:
            offsets[ev.index] = at + len(ev.text)
    else:
        choice = {"index": ev.index, "text": "", "logprobs": None, "finish_reason": ev.finish_reason}
    return {**base, "choices": [choice]}


def chat_choice(index: int, r: dict[str, Any], model: Any, generation: Generation, plan: ToolPlan) -> dict[str, Any]:
    """A chat choice; a reply that is a tool call gets message.tool_calls and finish_reason "tool_calls"."""
    reply = plan.parse(r["text"], r["finish_reason"])
    return {"index": index, "message": reply.to_openai(), "logprobs": chat_logprobs(model, r["logprobs"] or [])
            if generation.want_logprobs is not None else None, "finish_reason": reply.finish_reason}


def chat_chunk(base: dict[str, Any], index: int, delta: dict[str, Any], finish_reason: str | None,
               ev: TextEvent | None = None, model: Any = None) -> dict[str, Any]:
    lps = chat_logprobs(model, ev.logprobs) if ev is not None and ev.logprobs is not None else None
    return {**base, "choices": [{"index": index, "delta": delta, "logprobs": lps, "finish_reason": finish_reason}]}
