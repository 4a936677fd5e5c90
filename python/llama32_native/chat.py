"""Chat prompt formats built at token level (Llama 3.2 Instruct, ChatML); never a template engine.

Contract (docs/MODEL.md, "Chat format"): scaffolding special tokens are inserted as ids; message text is encoded
with ``allow_special=False``, so user text can never forge headers or end-of-turn markers.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .errors import InvalidArgumentError, InvalidArgumentTypeError
from .tokenizer import Tokenizer

__all__ = [
    "SMOLLM2_DEFAULT_SYSTEM",
    "ChatFormat",
    "ChatMLFormat",
    "Llama3ChatFormat",
    "chat_format_for",
    "validate_messages",
]

ROLES = frozenset({"system", "user", "assistant", "tool", "ipython"})
MAX_MESSAGES = 100_000

SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def validate_messages(messages: Any) -> None:
    """Check ``[{"role": ..., "content": str}, ...]``; TypeError/ValueError naming the message.

    Roles: system, user, assistant, tool (alias ipython). Extra keys are ignored, except a
    non-empty ``tool_calls`` which is not supported.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise InvalidArgumentTypeError(f"messages must be a list of dicts, not {type(messages).__name__}")
    if not messages:
        raise InvalidArgumentError("messages must not be empty")
    if len(messages) > MAX_MESSAGES:
        raise InvalidArgumentError(f"messages: {len(messages)} messages, more than {MAX_MESSAGES}")
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            raise InvalidArgumentTypeError(f"messages[{i}] must be a dict, not {type(msg).__name__}")
        role = msg.get("role")
        if not isinstance(role, str):
            raise InvalidArgumentTypeError(f"messages[{i}]['role'] must be a str, not {type(role).__name__}")
        if role not in ROLES:
            raise InvalidArgumentError(f"messages[{i}]['role'] = {role!r}; expected one of {sorted(ROLES)}")
        if "content" not in msg:
            raise InvalidArgumentError(f"messages[{i}] has no 'content'")
        content = msg["content"]
        if not isinstance(content, str):
            raise InvalidArgumentTypeError(f"messages[{i}]['content'] must be a str, not {type(content).__name__}")
        if msg.get("tool_calls"):
            raise InvalidArgumentError(f"messages[{i}]: 'tool_calls' is not supported; put the call in 'content'")


def _today() -> str:
    """Today as the template's ``strftime("%d %b %Y")`` would print it, locale-independent."""
    d = datetime.date.today()
    return f"{d.day:02d} {_MONTHS[d.month - 1]} {d.year}"


class ChatFormat(Protocol):
    """What Model.chat needs from a format."""

    @property
    def stop_tokens(self) -> frozenset[int]: ...

    def encode(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        date_string: str | None = None,
        system_preamble: bool = True,
    ) -> list[int]: ...


class Llama3ChatFormat:
    """The official Llama 3.2 Instruct prompt (HF chat template), token by token (docs/MODEL.md, "Chat format").

    ``<|begin_of_text|>``, then always a system block whose text is
    ``"Cutting Knowledge Date: December 2023\\nToday Date: {date}\\n\\n" + system`` (the first
    message, if its role is system), then each message as
    ``<|start_header_id|>{role}<|end_header_id|>`` + ``"\\n\\n" + content.strip()`` +
    ``<|eot_id|>``; role ``tool`` is written as ``ipython`` and its content is not trimmed.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        try:
            self._bos = tokenizer.special("<|begin_of_text|>")
            self._start = tokenizer.special("<|start_header_id|>")
            self._end = tokenizer.special("<|end_header_id|>")
            self._eot = tokenizer.special("<|eot_id|>")
        except KeyError as exc:
            raise InvalidArgumentError(f"tokenizer lacks the Llama 3 chat tokens: {exc}") from None

    @property
    def stop_tokens(self) -> frozenset[int]:
        """End of turn, end of message and end of text (128009, 128008, 128001)."""
        return self.tokenizer.stop_tokens | {self._eot}

    def _block(self, role: str, text: str) -> list[int]:
        enc = self.tokenizer.encode
        return [self._start, *enc(role, bos=False), self._end, *enc("\n\n" + text, bos=False), self._eot]

    def encode(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        date_string: str | None = None,
        system_preamble: bool = True,
    ) -> list[int]:
        """Prompt ids. ``date_string`` defaults to today ("%d %b %Y"); pin it for reproducibility.

        ``system_preamble=False`` drops the dated preamble (Meta ChatFormat style): a system
        block is then written only for a system message.
        """
        validate_messages(messages)
        if date_string is None:
            date_string = _today()
        elif not isinstance(date_string, str):
            raise InvalidArgumentTypeError(f"date_string must be a str, not {type(date_string).__name__}")
        rest = list(messages)
        system = ""
        has_system = rest[0]["role"] == "system"
        if has_system:
            system = rest.pop(0)["content"].strip()
        ids = [self._bos]
        if system_preamble:
            preamble = f"Cutting Knowledge Date: December 2023\nToday Date: {date_string}\n\n"
            ids += self._block("system", preamble + system)
        elif has_system:
            ids += self._block("system", system)
        for msg in rest:
            role, content = msg["role"], msg["content"]
            if role in ("tool", "ipython"):
                ids += self._block("ipython", content)
            else:
                ids += self._block(role, content.strip())
        if add_generation_prompt:
            ids += [self._start, *self.tokenizer.encode("assistant", bos=False), self._end]
            ids += self.tokenizer.encode("\n\n", bos=False)
        return ids


class ChatMLFormat:
    """ChatML (SmolLM2): ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message.

    ``default_system`` (e.g. SMOLLM2_DEFAULT_SYSTEM, which SmolLM2's template inserts) is
    written as a first system message when the conversation has none. Contents are not trimmed.
    """

    def __init__(self, tokenizer: Tokenizer, default_system: str | None = None) -> None:
        self.tokenizer = tokenizer
        if default_system is not None and not isinstance(default_system, str):
            raise InvalidArgumentTypeError(f"default_system must be a str or None, not {type(default_system).__name__}")
        self.default_system = default_system
        try:
            self._start = tokenizer.special("<|im_start|>")
            self._end = tokenizer.special("<|im_end|>")
        except KeyError as exc:
            raise InvalidArgumentError(f"tokenizer lacks the ChatML tokens: {exc}") from None

    @property
    def stop_tokens(self) -> frozenset[int]:
        """``<|im_end|>`` plus the tokenizer's stop tokens (its eos)."""
        return self.tokenizer.stop_tokens | {self._end}

    def encode(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        date_string: str | None = None,
        system_preamble: bool = True,
    ) -> list[int]:
        """Prompt ids. ``date_string`` is unused (uniform signature); ``system_preamble=False``
        suppresses ``default_system``."""
        validate_messages(messages)
        enc = self.tokenizer.encode
        turns = [(m["role"], m["content"]) for m in messages]
        if system_preamble and self.default_system is not None and turns[0][0] != "system":
            turns.insert(0, ("system", self.default_system))
        ids: list[int] = []
        newline = enc("\n", bos=False)
        for role, content in turns:
            ids += [self._start, *enc(f"{role}\n{content}", bos=False), self._end, *newline]
        if add_generation_prompt:
            ids += [self._start, *enc("assistant\n", bos=False)]
        return ids


def chat_format_for(tokenizer: Tokenizer, default_system: str | None = None) -> ChatFormat | None:
    """The chat format a tokenizer's special tokens imply (Llama 3, ChatML), or None."""
    specials = tokenizer.special_ids
    if "<|start_header_id|>" in specials and "<|eot_id|>" in specials:
        return Llama3ChatFormat(tokenizer)
    if "<|im_start|>" in specials and "<|im_end|>" in specials:
        return ChatMLFormat(tokenizer, default_system)
    return None
