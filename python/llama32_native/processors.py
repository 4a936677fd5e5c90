"""Logits processors: the one place where a generation's next-token logits are changed before sampling.

Contract: a processor sees the float32 logits of one sequence ([n_vocab]) and the tokens it generated so
far, and returns logits (it may modify them in place). Disallowed tokens get -inf. Stateful processors
(grammars) advance in `accept` and step back in `rollback`, so speculative decoding can undo drafts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["LogitsProcessor"]


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
