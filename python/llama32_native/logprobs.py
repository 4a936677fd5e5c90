"""Per-token log-probabilities in OpenAI's response shapes (chat `logprobs.content`, completions `logprobs`).

Contract: values come from the generation core's TokenLogprob records (log-softmax of the processed logits: after
logit bias, penalties and grammar masks, before temperature); a -inf log-probability (a token a grammar forbids) is
written as -9999.0, as OpenAI does, so the JSON stays valid. Token strings are the token's bytes as UTF-8 (invalid
sequences replaced); `bytes` holds the exact bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = ["MAX_TOP_LOGPROBS", "chat_logprobs", "check_logprobs", "completion_logprobs"]

MAX_TOP_LOGPROBS = 20
FLOOR = -9999.0


def check_logprobs(logprobs: Any, top_logprobs: Any = None, *, chat: bool = True) -> int | None:
    """The number of alternatives to record per token (None: no logprobs), from OpenAI's request fields.

    Chat: `logprobs` is a bool and `top_logprobs` an int in [0, 20] that needs logprobs=true. Completions:
    `logprobs` is an int in [0, 20] (or None).
    """
    if chat:
        if logprobs is not None and not isinstance(logprobs, bool):
            raise InvalidArgumentTypeError(f"logprobs must be a bool, not {type(logprobs).__name__}")
        if top_logprobs is not None:
            _check_k("top_logprobs", top_logprobs)
            if not logprobs:
                raise InvalidArgumentError("top_logprobs needs logprobs=true")
        return (top_logprobs or 0) if logprobs else None
    if logprobs is None or logprobs is False:
        return None
    return _check_k("logprobs", logprobs)


def _check_k(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentTypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= MAX_TOP_LOGPROBS:
        raise InvalidArgumentError(f"{name} must be in [0, {MAX_TOP_LOGPROBS}], got {value}")
    return value


def _lp(x: float) -> float:
    return x if math.isfinite(x) else FLOOR


def _tok(tokenizer: Any, token: int) -> tuple[str, bytes]:
    b = tokenizer.token_bytes(token)
    return b.decode("utf-8", errors="replace"), b


def chat_logprobs(tokenizer: Any, records: Sequence[Any]) -> dict[str, Any]:
    """`choices[i].logprobs` of a chat completion: {"content": [{token, logprob, bytes, top_logprobs}, ...]}."""
    content = []
    for r in records:
        text, b = _tok(tokenizer, r.token)
        top = []
        for t, lp in r.top:
            tt, tb = _tok(tokenizer, t)
            top.append({"token": tt, "logprob": _lp(lp), "bytes": list(tb)})
        content.append({"token": text, "logprob": _lp(r.logprob), "bytes": list(b), "top_logprobs": top})
    return {"content": content}


def completion_logprobs(tokenizer: Any, records: Sequence[Any], text_offset: int = 0) -> dict[str, Any]:
    """`choices[i].logprobs` of a completion: tokens, token_logprobs, top_logprobs ({token: logprob} per position)
    and text_offset (the character offset of each token, starting at `text_offset`)."""
    tokens, values, tops, offsets = [], [], [], []
    pending = b""
    pos = text_offset
    for r in records:
        text, b = _tok(tokenizer, r.token)
        tokens.append(text)
        values.append(_lp(r.logprob))
        top: dict[str, float] = {}
        for t, lp in r.top:
            top.setdefault(_tok(tokenizer, t)[0], _lp(lp))
        tops.append(top)
        offsets.append(pos)
        pending += b  # a character split over tokens counts once, after its last byte
        if _complete(pending):
            pos += len(pending.decode("utf-8", errors="replace"))
            pending = b""
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}


def _complete(b: bytes) -> bool:
    """True when `b` does not end inside a UTF-8 sequence (so its characters can be counted)."""
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError as e:
        return e.reason != "unexpected end of data"
