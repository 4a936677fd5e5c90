"""OpenAI response shapes: choices and streamed chunks of completions and chat completions, with logprobs.

Contract: pure functions from results/events to JSON-ready dicts; token texts come from the model's
tokenizer (invalid UTF-8 pieces are shown with U+FFFD, their exact bytes in "bytes").
"""

from __future__ import annotations

from typing import Any

from ..generation import Generation, TokenLogprob
from .scheduler import DoneEvent, TextEvent

__all__ = ["completion_choice", "completion_chunk", "chat_choice", "chat_chunk"]


def _piece(model: Any, token: int) -> bytes:
    return model.tokenizer.token_bytes(token) if model.tokenizer is not None else b""


def completion_logprobs(model: Any, lps: list[TokenLogprob] | None, offset: int = 0) -> dict[str, Any] | None:
    """The legacy completions shape: parallel lists of tokens, their logprobs, top alternatives, text offsets."""
    if not lps:
        return None
    tokens, offsets, pos = [], [], offset
    for lp in lps:
        text = _piece(model, lp.token).decode("utf-8", errors="replace")
        tokens.append(text)
        offsets.append(pos)
        pos += len(text)
    top = [{_piece(model, t).decode("utf-8", errors="replace"): v for t, v in lp.top} for lp in lps]
    return {"tokens": tokens, "token_logprobs": [lp.logprob for lp in lps], "top_logprobs": top, "text_offset": offsets}


def chat_logprobs(model: Any, lps: list[TokenLogprob] | None) -> dict[str, Any] | None:
    """The chat shape: content[] of {token, logprob, bytes, top_logprobs[]}."""
    if lps is None:
        return None

    def entry(token: int, logprob: float) -> dict[str, Any]:
        raw = _piece(model, token)
        return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(raw)}

    return {"content": [{**entry(lp.token, lp.logprob), "top_logprobs": [entry(t, v) for t, v in lp.top]}
                        for lp in lps]}


def completion_choice(index: int, r: dict[str, Any], model: Any) -> dict[str, Any]:
    return {"index": index, "text": r["text"], "logprobs": completion_logprobs(model, r["logprobs"] or None),
            "finish_reason": r["finish_reason"]}


def completion_chunk(base: dict[str, Any], ev: TextEvent | DoneEvent, model: Any) -> dict[str, Any]:
    if isinstance(ev, TextEvent):
        choice = {"index": ev.index, "text": ev.text, "logprobs": completion_logprobs(model, ev.logprobs),
                  "finish_reason": None}
    else:
        choice = {"index": ev.index, "text": "", "logprobs": None, "finish_reason": ev.finish_reason}
    return {**base, "choices": [choice]}


def chat_choice(index: int, r: dict[str, Any], model: Any, generation: Generation) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": r["text"]}
    finish = r["finish_reason"]
    return {"index": index, "message": message, "logprobs": chat_logprobs(model, r["logprobs"] or None)
            if generation.want_logprobs is not None else None, "finish_reason": finish}


def chat_chunk(base: dict[str, Any], index: int, delta: dict[str, Any], finish_reason: str | None,
               ev: TextEvent | None = None, model: Any = None) -> dict[str, Any]:
    lps = chat_logprobs(model, ev.logprobs) if ev is not None and ev.logprobs is not None else None
    return {**base, "choices": [{"index": index, "delta": delta, "logprobs": lps, "finish_reason": finish_reason}]}
