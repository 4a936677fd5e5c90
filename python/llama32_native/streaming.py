"""Incremental detokenization: whole UTF-8 chunks, stop strings that may straddle tokens.

Contract: the concatenation of every ``push`` result and ``finish()`` equals the decoded text
of the pushed tokens (specials skipped unless ``skip_special=False``) cut right before the
first stop string to complete; each chunk is valid text (incomplete UTF-8 sequences are held
back).
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence

from .sampling import normalize_stop
from .tokenizer import Tokenizer

__all__ = ["TextStream"]


class TextStream:
    """Turns token ids, one at a time, into text that is safe to show.

    ``push(id)`` returns the text that can be emitted now: it holds back the bytes of an
    unfinished UTF-8 character and the tail of the text that could be the start of a stop
    string. Once a stop string is complete, ``stopped`` is True, the emitted text ends right
    before it and further pushes return "" (the caller stops generating). The first stop string
    to complete wins; when two complete at the same character, the longer one. ``finish()`` flushes what is held (an unfinished
    character becomes U+FFFD).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        stop: str | Sequence[str] | None = None,
        skip_special: bool = True,
    ) -> None:
        self._tokenizer = tokenizer
        self._stops = normalize_stop(stop)
        self._skip_special = bool(skip_special)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""  # decoded, not yet emitted: a possible start of a stop string
        self._emitted: list[str] = []
        self._stopped = False
        self._finished = False

    @property
    def stopped(self) -> bool:
        """True once a stop string was seen."""
        return self._stopped

    @property
    def text(self) -> str:
        """Everything emitted so far."""
        return "".join(self._emitted)

    def push(self, token_id: int) -> str:
        """Add one token; return the text that is now safe to emit (maybe "")."""
        data = self._tokenizer.token_bytes(token_id)  # validates the id
        if self._stopped or self._finished:
            return ""
        if self._skip_special and self._tokenizer.is_special(token_id):
            return ""
        return self._advance(self._decoder.decode(data), final=False)

    def finish(self) -> str:
        """Flush everything held back; the stream accepts no more tokens after this."""
        if self._stopped or self._finished:
            return ""
        self._finished = True
        return self._advance(self._decoder.decode(b"", final=True), final=True)

    def _advance(self, text: str, final: bool) -> str:
        pending = self._pending + text
        cut = self._first_stop(pending)
        if cut >= 0:
            self._stopped = True
            self._pending = ""
            return self._emit(pending[:cut])
        hold = 0 if final else self._held_tail(pending)
        self._pending = pending[len(pending) - hold :]
        return self._emit(pending[: len(pending) - hold])

    def _emit(self, chunk: str) -> str:
        if chunk:
            self._emitted.append(chunk)
        return chunk

    def _first_stop(self, text: str) -> int:
        """Start of the stop string that completes first in text (at equal ends, the longer
        one), or -1. Scanning by end position keeps the result independent of how the text
        was split into tokens."""
        best_end, best_start = -1, -1
        for stop in self._stops:
            i = text.find(stop)
            if i < 0:
                continue
            end = i + len(stop)
            if best_end < 0 or end < best_end or (end == best_end and i < best_start):
                best_end, best_start = end, i
        return best_start

    def _held_tail(self, text: str) -> int:
        """Length of the longest suffix of text that is a proper prefix of a stop string."""
        if not text:
            return 0
        last = text[-1]
        best = 0
        for stop in self._stops:
            limit = min(len(stop) - 1, len(text))
            j = stop.rfind(last, 0, limit)  # a prefix of length j+1 ends with `last`
            while j + 1 > best:
                if text.endswith(stop[: j + 1]):
                    best = j + 1
                    break
                j = stop.rfind(last, 0, j)
        return best
