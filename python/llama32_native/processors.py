"""Logits processors: the one place where a generation's next-token logits are changed before sampling.

Contract: a processor sees the float32 logits of one sequence ([n_vocab]) and the tokens it generated so
far, and returns logits (it may modify them in place). Disallowed tokens get -inf. Stateful processors
(grammars) advance in `accept` and step back in `rollback`, so speculative decoding can undo drafts.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = ["LogitBias", "LogitsProcessor", "Penalties"]


class LogitsProcessor:
    """Base class: a no-op processor. Subclasses override what they need."""

    def __call__(self, logits: np.ndarray, generated: Sequence[int]) -> np.ndarray:
        return logits

    def accept(self, token: int) -> None:
        """`token` was appended to the sequence."""

    def rollback(self, n: int) -> None:
        """The last `n` accepted tokens were taken back."""

    def forced(self) -> list[int]:
        """Tokens that must come next, appended without sampling ([] when the choice is open)."""
        return []

    def finished(self) -> bool:
        """True when the constraint is complete: the generation ends with finish_reason "stop"."""
        return False


MAX_LOGIT_BIAS_ENTRIES = 1024  # OpenAI accepts at most this many
MAX_PENALTY = 2.0  # presence_penalty / frequency_penalty range is [-2, 2]


def _check_real(name: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgumentTypeError(f"{name} must be a number, not {type(value).__name__}")
    v = float(value)
    if not (math.isfinite(v) and lo <= v <= hi):
        raise InvalidArgumentError(f"{name} must be in [{lo}, {hi}], got {value!r}")
    return v


class LogitBias(LogitsProcessor):
    """OpenAI ``logit_bias``: a value in [-100, 100] added to each listed token's logit.

    Keys are token ids (ints, or decimal strings as JSON carries them). -100 effectively bans a token,
    100 effectively forces it. Validated on construction against ``n_vocab``.
    """

    def __init__(self, bias: Mapping[Any, Any], n_vocab: int) -> None:
        if not isinstance(bias, Mapping):
            raise InvalidArgumentTypeError(f"logit_bias must be a dict of token id -> bias, not {type(bias).__name__}")
        if len(bias) > MAX_LOGIT_BIAS_ENTRIES:
            raise InvalidArgumentError(f"logit_bias has {len(bias)} entries, at most {MAX_LOGIT_BIAS_ENTRIES} allowed")
        ids, values = [], []
        for key, value in bias.items():
            tok = _token_key(key)
            if not 0 <= tok < n_vocab:
                raise InvalidArgumentError(f"logit_bias: token id {tok} is out of range [0, {n_vocab})")
            ids.append(tok)
            values.append(_check_real(f"logit_bias[{key!r}]", value, -100.0, 100.0))
        self.ids = np.asarray(ids, dtype=np.int64)
        self.values = np.asarray(values, dtype=np.float32)

    def __call__(self, logits: np.ndarray, generated: Sequence[int]) -> np.ndarray:
        if self.ids.size:
            logits[self.ids] += self.values
        return logits


def _token_key(key: Any) -> int:
    if isinstance(key, str):
        s = key.strip()
        if not (s.isascii() and s.lstrip("-").isdigit()):
            raise InvalidArgumentError(f"logit_bias key {key!r} is not a token id")
        return int(s)
    if isinstance(key, bool) or not isinstance(key, numbers.Integral):
        raise InvalidArgumentTypeError(f"logit_bias keys must be token ids, not {type(key).__name__}")
    return int(key)


class Penalties(LogitsProcessor):
    """OpenAI presence and frequency penalties over the tokens generated so far (not the prompt):

    ``logit[j] -= count[j] * frequency_penalty + (count[j] > 0) * presence_penalty``, both in [-2, 2].
    Stateless: counts come from ``generated`` at every call, so rollback needs nothing.
    """

    def __init__(self, presence_penalty: float = 0.0, frequency_penalty: float = 0.0) -> None:
        self.presence = _check_real("presence_penalty", presence_penalty, -MAX_PENALTY, MAX_PENALTY)
        self.frequency = _check_real("frequency_penalty", frequency_penalty, -MAX_PENALTY, MAX_PENALTY)

    @property
    def active(self) -> bool:
        return self.presence != 0.0 or self.frequency != 0.0

    def __call__(self, logits: np.ndarray, generated: Sequence[int]) -> np.ndarray:
        if not generated or not self.active:
            return logits
        ids, counts = np.unique(np.asarray(generated, dtype=np.int64), return_counts=True)
        logits[ids] -= (counts * self.frequency + self.presence).astype(np.float32)
        return logits
