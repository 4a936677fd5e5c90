"""Sampling parameters and a NumPy next-token sampler (greedy, temperature, top-k/p, min-p).

Contract: SamplingParams validates itself on construction (ValueError/TypeError naming the
parameter); Sampler.sample never sorts the whole vocabulary when a few hundred candidates
hold the requested mass, and raises NumericalError on NaN or +inf logits; -inf marks a token logits processors
forbid (grammar masks), and a vector with no finite entry is an error too.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidArgumentError, InvalidArgumentTypeError, NumericalError

__all__ = ["Sampler", "SamplingParams", "normalize_stop", "verify_token"]

MAX_NEW_TOKENS = 1 << 20
MAX_TEMPERATURE = 100.0
MAX_TOP_K = 1 << 20
MAX_REPETITION_PENALTY = 100.0
MAX_STOP_STRINGS = 64
MAX_STOP_CHARS = 1024
# Below this temperature sampling is greedy (1/T would overflow the logit scale).
GREEDY_TEMPERATURE = 1e-6
# Relative-probability thresholds tried, in order, to find a candidate set holding top_p.
_NUCLEUS_THRESHOLDS = (1e-3, 1e-6, 1e-12, 1e-24)
# Logit distances below the maximum tried, in order, to find at least top_k candidates.
_TOP_K_DELTAS = (4.0, 8.0, 16.0, 32.0)
# Candidate sets up to this size are sorted outright.
_SORT_LIMIT = 4096
# Block length of the two-level draw over long weight arrays.
_BLOCK = 256


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if not _is_int(value):
        raise InvalidArgumentTypeError(f"{name} must be an int, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise InvalidArgumentError(f"{name} must be in [{lo}, {hi}], got {value}")


def _check_real(name: str, value: Any, lo: float, hi: float, lo_open: bool = False) -> None:
    if not _is_real(value):
        raise InvalidArgumentTypeError(f"{name} must be a float, not {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise InvalidArgumentError(f"{name} must be finite, got {v}")
    if v < lo or v > hi or (lo_open and v == lo):
        bracket = "(" if lo_open else "["
        raise InvalidArgumentError(f"{name} must be in {bracket}{lo}, {hi}], got {v}")


def _masked_sum(w: np.ndarray, mask: np.ndarray) -> float:
    """sum(w[mask]) without a data-dependent branch per element (a dot with the 0/1 mask)."""
    return float(np.dot(w, mask.astype(w.dtype)))


def normalize_stop(stop: Any, name: str = "stop") -> tuple[str, ...]:
    """``None | str | list/tuple of str`` -> tuple; at most 64 non-empty strings of <= 1024 chars."""
    if stop is None:
        return ()
    if isinstance(stop, str):
        items: Sequence[Any] = (stop,)
    elif isinstance(stop, (list, tuple)):
        items = stop
    else:
        raise InvalidArgumentTypeError(f"{name} must be a str or a list of str, not {type(stop).__name__}")
    if len(items) > MAX_STOP_STRINGS:
        raise InvalidArgumentError(f"{name}: {len(items)} strings, at most {MAX_STOP_STRINGS} allowed")
    for i, s in enumerate(items):
        if not isinstance(s, str):
            raise InvalidArgumentTypeError(f"{name}[{i}] must be a str, not {type(s).__name__}")
        if not s:
            raise InvalidArgumentError(f"{name}[{i}] is empty")
        if len(s) > MAX_STOP_CHARS:
            raise InvalidArgumentError(f"{name}[{i}] has {len(s)} chars, at most {MAX_STOP_CHARS} allowed")
    return tuple(items)


@dataclass
class SamplingParams:
    """How to pick each next token. Validated on construction (see ``validate``).

    ``do_sample=False`` or ``temperature == 0`` means greedy. ``top_k=0`` and ``top_p=1`` and
    ``min_p=0`` disable those cuts. ``seed=None`` draws fresh entropy. ``stop`` holds strings
    that end generation (the text is cut right before the first one).
    """

    max_new_tokens: int = 256
    temperature: float = 0.6
    top_p: float = 0.9
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    do_sample: bool = True
    seed: int | None = None
    stop: str | list[str] | tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise InvalidArgumentTypeError (wrong type) or InvalidArgumentError (NaN, inf, out of range) naming
        the field; they are TypeError and ValueError subclasses."""
        _check_int("max_new_tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS)
        _check_real("temperature", self.temperature, 0.0, MAX_TEMPERATURE)
        _check_real("top_p", self.top_p, 0.0, 1.0)
        _check_int("top_k", self.top_k, 0, MAX_TOP_K)
        _check_real("min_p", self.min_p, 0.0, 1.0)
        _check_real("repetition_penalty", self.repetition_penalty, 0.0, MAX_REPETITION_PENALTY, lo_open=True)
        if not isinstance(self.do_sample, (bool, np.bool_)):
            raise InvalidArgumentTypeError(f"do_sample must be a bool, not {type(self.do_sample).__name__}")
        if self.seed is not None:
            _check_int("seed", self.seed, 0, 2**64 - 1)
        normalize_stop(self.stop)

    @property
    def greedy(self) -> bool:
        """True when the next token is always the argmax."""
        return not self.do_sample or self.temperature < GREEDY_TEMPERATURE

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return normalize_stop(self.stop)


_FIELDS = frozenset(f for f in SamplingParams.__dataclass_fields__)
_dataclass_init = SamplingParams.__init__


def _checked_init(self: SamplingParams, *args: Any, **kwargs: Any) -> None:
    unknown = sorted(set(kwargs) - _FIELDS)
    if unknown or len(args) > len(_FIELDS):
        what = f"unknown sampling parameter(s) {', '.join(unknown)}" if unknown else "too many positional arguments"
        raise InvalidArgumentTypeError(f"{what}; known: {', '.join(sorted(_FIELDS))}")
    _dataclass_init(self, *args, **kwargs)


SamplingParams.__init__ = _checked_init  # type: ignore[method-assign]  # an unknown name is an argument error too


class Sampler:
    """Picks next tokens for one generation; holds its seeded PCG64 generator.

    Order (as Hugging Face / llama.cpp): repetition penalty (positive logits divided, negative
    multiplied, over the set of ids in ``history``), temperature, top-k, top-p (Meta: the token
    that crosses the threshold is kept), min-p (relative to the top probability), then a draw.
    """

    def __init__(self, params: SamplingParams, n_vocab: int) -> None:
        if not isinstance(params, SamplingParams):
            raise InvalidArgumentTypeError(f"params must be SamplingParams, not {type(params).__name__}")
        params.validate()
        _check_int("n_vocab", n_vocab, 1, 1 << 24)
        self.params = params
        self.n_vocab = int(n_vocab)
        seed = None if params.seed is None else int(params.seed)
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._greedy = params.greedy
        self._work = np.empty(self.n_vocab, dtype=np.float32)
        self._penalized = np.empty(self.n_vocab, dtype=np.float32)

    # -- checks and penalty -----------------------------------------------------------------

    def _as_logits(self, logits: Any) -> np.ndarray:
        x = np.asarray(logits, dtype=np.float32)
        if x.shape != (self.n_vocab,):
            raise InvalidArgumentError(f"logits must have shape ({self.n_vocab},), got {x.shape}")
        return x

    def _penalize(self, x: np.ndarray, history: Sequence[int]) -> np.ndarray:
        if isinstance(history, np.ndarray):
            h = history.astype(np.int64, copy=False).ravel()
        else:
            h = np.fromiter(history, dtype=np.int64, count=len(history))
        if h.size == 0:
            return x
        if h.min() < 0 or h.max() >= self.n_vocab:
            raise InvalidArgumentError(f"history holds a token id outside [0, {self.n_vocab})")
        rp = np.float32(self.params.repetition_penalty)
        y = self._penalized
        np.copyto(y, x)
        v = y[h]  # duplicates read the original value, so each id is penalized once
        y[h] = np.where(v > 0, v / rp, v * rp)
        return y

    # -- sampling ---------------------------------------------------------------------------

    def sample(self, logits: np.ndarray, history: Sequence[int] = ()) -> int:
        """Next token id from float32 ``logits[n_vocab]``; ``history`` = ids seen so far."""
        x = self._as_logits(logits)
        m = float(x.max())  # NaN propagates through max: one check covers NaN, +inf and all -inf
        if not math.isfinite(m):
            raise NumericalError("logits contain NaN or +Inf, or no token is allowed")
        if self.params.repetition_penalty != 1.0 and len(history):
            x = self._penalize(x, history)
            m = float(x.max())
        if self._greedy:
            return int(np.argmax(x))
        return self._sample_from(x, m)

    def _sample_from(self, x: np.ndarray, m: float) -> int:
        ids, w = self._candidates(x, m)
        j = self._pick_weighted(w)
        return j if ids is None else int(ids[j])

    def probs(self, logits: np.ndarray, history: Sequence[int] = ()) -> np.ndarray:
        """The float64 distribution [n_vocab] that ``sample`` draws from (after the repetition penalty,
        temperature, top-k, top-p and min-p; one-hot at the argmax when greedy). Draws nothing."""
        x = self._as_logits(logits)
        if not math.isfinite(float(x.max())):
            raise NumericalError("logits contain NaN or +Inf, or no token is allowed")
        if self.params.repetition_penalty != 1.0 and len(history):
            x = self._penalize(x, history)
        out = np.zeros(self.n_vocab, dtype=np.float64)
        if self._greedy:
            out[int(np.argmax(x))] = 1.0
            return out
        ids, w = self._candidates(x, float(x.max()))
        if ids is None:
            out[:] = w
        else:
            out[ids] = w
        out /= out.sum()
        return out

    def draw(self, weights: np.ndarray) -> int:
        """An index drawn with probability ``weights[i] / sum(weights)`` from this sampler's generator."""
        return self._pick_weighted(np.asarray(weights))

    def uniform(self) -> float:
        """A uniform draw in [0, 1) from this sampler's generator."""
        return float(self._rng.random())

    def _candidates(self, x: np.ndarray, m: float) -> tuple[np.ndarray | None, np.ndarray]:
        """(ids, unnormalized weights) of the tokens a draw may pick; ids None: w covers every id."""
        p = self.params
        inv_t = 1.0 / float(p.temperature)
        ids: np.ndarray | None = None  # None: w covers every id
        if 0 < p.top_k < self.n_vocab:
            ids = self._top_k_ids(x, m, p.top_k)
            w = np.exp((x[ids] - m) * inv_t, dtype=np.float32)
            if p.top_p < 1.0:
                kept = self._nucleus(w, p.top_p * float(w.sum(dtype=np.float64)))
                if kept is not None:
                    ids, w = ids[kept], w[kept]
        elif p.top_p < 1.0:
            w = self._weights(x, m, inv_t)
            kept = self._nucleus(w, p.top_p * float(w.sum(dtype=np.float64)))
            if kept is not None:
                ids, w = kept, w[kept]
        elif p.min_p > 0.0 and np.count_nonzero(x >= self._min_p_logit(m)) <= _SORT_LIMIT:
            ids = np.flatnonzero(x >= self._min_p_logit(m))
            w = np.exp((x[ids] - m) * inv_t, dtype=np.float32)
        else:
            w = self._weights(x, m, inv_t)
        if p.min_p > 0.0:  # weights are relative to the top token (weight 1); zero the rest
            np.multiply(w, w >= np.float32(p.min_p), out=w)
        return ids, w

    def _min_p_logit(self, m: float) -> float:
        """Logit at which the probability is min_p times the top one."""
        return m + float(self.params.temperature) * math.log(self.params.min_p)

    def _weights(self, x: np.ndarray, m: float, inv_t: float) -> np.ndarray:
        """exp((x - max) / T) for every id, in the reusable work buffer (max weight = 1)."""
        w = self._work
        np.subtract(x, np.float32(m), out=w)
        np.multiply(w, np.float32(inv_t), out=w)
        np.exp(w, out=w)
        return w

    def _top_k_ids(self, x: np.ndarray, m: float, k: int) -> np.ndarray:
        """Ids of the k largest logits: a logit threshold leaves few candidates when the
        distribution is peaked; otherwise the k-th value comes from a partition."""
        for delta in _TOP_K_DELTAS:
            count = int(np.count_nonzero(x >= m - delta))
            if count >= k:
                if count > max(4 * k, _SORT_LIMIT):
                    break
                ids = np.flatnonzero(x >= m - delta)
                if ids.size > k:
                    ids = ids[np.argpartition(x[ids], ids.size - k)[ids.size - k :]]
                return ids
        kth = np.partition(x, x.size - k)[x.size - k]
        above = np.flatnonzero(x > kth)
        ties = np.flatnonzero(x == kth)[: k - above.size]
        return np.concatenate([above, ties])

    def _nucleus(self, w: np.ndarray, target: float) -> np.ndarray | None:
        """The top-p set: ids by weight, kept while the mass before them is <= target.

        Returns its indices when it lies in a small top-prefix set (a few hundred ids for a
        trained model: only they are sorted). For flat distributions, bisects on the weight
        value until the band holding the boundary is small, sorts only that band, zeroes the
        weights outside the set in place and returns None.
        """
        lo, n_lo = 0.0, w.size  # invariant: mass(w >= lo) > target; n_lo = count(w >= lo)
        for threshold in _NUCLEUS_THRESHOLDS:
            ids = np.flatnonzero(w >= np.float32(threshold))
            if ids.size <= _SORT_LIMIT:
                if float(w[ids].sum(dtype=np.float64)) > target:
                    return self._nucleus_sorted(ids, w[ids], 0.0, target)
            elif _masked_sum(w, w >= np.float32(threshold)) > target:
                lo, n_lo = threshold, ids.size
                break
        hi, n_hi = 2.0, 0  # every weight is <= 1 (the top token's): mass(w >= hi) = 0
        while n_lo - n_hi > _SORT_LIMIT:
            mid = 0.5 * (lo + hi) if lo * 8.0 > hi else math.sqrt(max(lo, 1e-38) * hi)
            if not lo < mid < hi:
                break
            mask = w >= np.float32(mid)
            if _masked_sum(w, mask) > target:
                lo, n_lo = mid, int(np.count_nonzero(mask))
            else:
                hi, n_hi = mid, int(np.count_nonzero(mask))
        keep = w >= np.float32(hi)  # their mass is <= target: all kept
        band = np.flatnonzero((w >= np.float32(lo)) & ~keep)
        base = float(w.sum(where=keep, dtype=np.float64))
        keep[self._nucleus_sorted(band, w[band], base, target)] = True
        np.multiply(w, keep, out=w)
        return None

    @staticmethod
    def _nucleus_sorted(ids: np.ndarray, w: np.ndarray, base: float, target: float) -> np.ndarray:
        """The ids kept from ``ids`` (weights ``w``) when ``base`` mass precedes them."""
        order = np.argsort(-w, kind="stable")
        ws = w[order]
        before = base + np.cumsum(ws, dtype=np.float64) - ws
        n = int(np.count_nonzero(before <= target))
        if base == 0.0:
            n = max(n, 1)
        return ids[order[:n]]

    def _pick_weighted(self, w: np.ndarray) -> int:
        """Index drawn with probability w[i] / sum(w); two-level (blocks) for long arrays."""
        if w.size <= 16 * _BLOCK:
            cums = np.cumsum(w, dtype=np.float64)
            return self._search(cums, w, self._rng.random() * cums[-1])
        nb = w.size // _BLOCK
        sums = np.empty(nb + 1, dtype=np.float64)
        w[: nb * _BLOCK].reshape(nb, _BLOCK).sum(axis=1, dtype=np.float64, out=sums[:nb])
        sums[nb] = w[nb * _BLOCK :].sum(dtype=np.float64)
        cums = np.cumsum(sums)
        u = self._rng.random() * cums[-1]
        b = self._search(cums, sums, u)
        seg = w[b * _BLOCK : (b + 1) * _BLOCK]
        u -= cums[b - 1] if b else 0.0
        cs = np.cumsum(seg, dtype=np.float64)
        return b * _BLOCK + self._search(cs, seg, u)

    @staticmethod
    def _search(cums: np.ndarray, w: np.ndarray, u: float) -> int:
        """First index whose cumulative sum exceeds u; rounding past the end -> last positive."""
        j = int(np.searchsorted(cums, u, side="right"))
        if j >= cums.size:
            j = int(np.flatnonzero(w > 0)[-1])
        return j


def verify_token(sampler: Sampler, logits: np.ndarray, history: Sequence[int], draft: int | None,
                 q: np.ndarray | None = None) -> int:
    """The token emitted at one verified position; the draft is accepted iff the result equals it.

    `logits` are the target's (processed) logits at that position, `history` the ids before it (for the
    repetition penalty). Greedy: the argmax. Sampling (the speculative-sampling rule): with p the target's
    distribution and q the drafter's (None: a point mass on `draft`), accept the draft with probability
    min(1, p(d)/q(d)), else draw from the normalized residual max(0, p - q); the emitted token is distributed
    as p. `draft=None` (the position after the last draft) draws from p.
    """
    if sampler.params.greedy:
        return sampler.sample(logits, history)
    p = sampler.probs(logits, history)
    if draft is None:
        return sampler.draw(p)
    d = int(draft)
    if not 0 <= d < p.size:
        raise InvalidArgumentError(f"draft token {d} is out of range [0, {p.size})")
    qd = 1.0 if q is None else float(q[d])
    if sampler.uniform() * qd < p[d]:  # probability min(1, p(d)/q(d))
        return d
    if q is None:
        residual = p
        residual[d] = 0.0
    else:
        residual = np.maximum(p - np.asarray(q, dtype=np.float64), 0.0)
    if not residual.sum() > 0.0:  # rejection needs p(d) < q(d), so the residual has mass; rounding aside
        residual = p
    return sampler.draw(residual)
