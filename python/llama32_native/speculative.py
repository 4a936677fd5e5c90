"""Speculative decoding: drafters (prompt lookup, a draft model), the exact verification rule, the adaptive draft length.

Contract: `verify_token` emits each token with exactly the target sampler's distribution (greedy: its argmax), whatever
the drafter proposed; a drafter only changes how many tokens one target forward yields. The n-gram table holds at most
`max_entries` keys; the controller drafts nothing when the measured acceptance and forward costs say it would not pay.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .errors import InvalidArgumentError, InvalidArgumentTypeError
from .generation import SessionLike, StepModel
from .sampling import Sampler, SamplingParams, verify_token

__all__ = [
    "AdaptiveProposer",
    "DraftLengthController",
    "DraftModelProposer",
    "ForwardProfile",
    "NgramProposer",
    "Proposer",
    "forward_profile",
    "make_proposer",
    "verify_token",
]

MAX_SPECULATIVE_TOKENS = 32
DEFAULT_SPECULATIVE_TOKENS = 8
# Prior acceptance of a prompt-lookup draft by match length (1, 2, 3, 4+), near what greedy SmolLM2 showed on the
# task prompts of bench/speculative_prompts.json; each controller then follows its own measurements.
NGRAM_PRIOR = {1: 0.3, 2: 0.6, 3: 0.6, 4: 0.8}


@runtime_checkable
class Proposer(Protocol):
    """What the generation core asks of a drafter (one instance per generation)."""

    def propose(self, context: Sequence[int], k: int) -> list[int]:
        """Up to k draft tokens to follow `context` (the prompt and every token emitted so far)."""
        ...

    def draft_probs(self) -> list[np.ndarray] | None:
        """The distributions the last drafts were drawn from ([n_vocab] each), or None: each is a point mass."""
        ...

    def accepted(self, n: int) -> None:
        """`n` of the last proposed drafts were accepted (the rest are rolled back)."""
        ...


# ----------------------------------------------------------------------------------------------- verification


# ----------------------------------------------------------------------------------------------- drafters


class NgramProposer:
    """Prompt lookup: continue the longest recent n-gram of the context that occurred earlier in it.

    The table maps each n-gram (n in [min_ngram, max_ngram]) to the position after its latest earlier
    occurrence; it holds at most `max_entries` keys (the least recently written go first), so its memory
    is bounded by max_entries * (max_ngram + 2) integers whatever the context length.
    """

    def __init__(self, max_ngram: int = 6, min_ngram: int = 1, max_entries: int = 1 << 16):
        for name, v, lo, hi in (("max_ngram", max_ngram, 1, 64), ("min_ngram", min_ngram, 1, 64),
                                ("max_entries", max_entries, 1, 1 << 24)):
            _check_int(name, v, lo, hi)
        if min_ngram > max_ngram:
            raise InvalidArgumentError(f"min_ngram={min_ngram} is larger than max_ngram={max_ngram}")
        self.max_ngram, self.min_ngram, self.max_entries = max_ngram, min_ngram, max_entries
        self._table: dict[tuple[int, ...], int] = {}
        self._tokens: list[int] = []  # the context seen so far (n-grams ending before its last token are indexed)

    def __len__(self) -> int:
        return len(self._table)

    def propose(self, context: Sequence[int], k: int) -> list[int]:
        n, pos = self._lookup(context)
        return self._tokens[pos : pos + k] if n and k > 0 else []

    def match_length(self, context: Sequence[int]) -> int:
        """Length of the n-gram a proposal after `context` would continue (0: none). Longer matches are
        accepted more often (on SmolLM2: the first draft 31% of the time after a 1-gram, 80%+ after 4+)."""
        return self._lookup(context)[0]

    def _lookup(self, context: Sequence[int]) -> tuple[int, int]:
        self._sync(context)
        toks, n_ctx = self._tokens, len(self._tokens)
        for n in range(min(self.max_ngram, n_ctx - 1), self.min_ngram - 1, -1):
            pos = self._table.get(tuple(toks[n_ctx - n :]))
            if pos is not None:
                return n, pos
        return 0, 0

    def draft_probs(self) -> None:
        return None

    def accepted(self, n: int) -> None:
        pass

    def _sync(self, context: Sequence[int]) -> None:
        """Index the tokens of `context` not seen yet; start over when it does not extend what was seen."""
        seen = self._tokens
        n_old = len(seen)
        if len(context) < n_old or (n_old and (context[n_old - 1] != seen[-1] or context[0] != seen[0])):
            self._table.clear()
            seen.clear()
            n_old = 0
        seen.extend(int(t) for t in context[n_old:])
        # An n-gram ending at i is indexed once token i+1 exists, so a match always has a continuation.
        for end in range(max(n_old - 1, 0), len(seen) - 1):
            for n in range(self.min_ngram, min(self.max_ngram, end + 1) + 1):
                key = tuple(seen[end - n + 1 : end + 1])
                self._table.pop(key, None)  # re-inserted last: dict order is write order
                self._table[key] = end + 1
        while len(self._table) > self.max_entries:
            del self._table[next(iter(self._table))]


class DraftModelProposer:
    """Drafts with a smaller model of the same vocabulary, in a session of its own (its cache follows the context).

    With greedy `params` (or none) it proposes the draft model's argmax (a point mass for the verifier); with
    sampling params it draws from its own distributions q under the same settings and reports them. The draft
    session is taken at the first proposal and given back by close(); with no free draft slot it proposes nothing.
    """

    def __init__(self, draft: StepModel, params: SamplingParams | None = None):
        self.draft = draft
        if params is not None and not params.greedy:
            seed = None if params.seed is None else (int(params.seed) + 0x9E3779B97F4A7C15) % 2**64
            self._sampler: Sampler | None = Sampler(dataclasses.replace(params, seed=seed), draft.config.n_vocab)
        else:
            self._sampler = None
        self._session: SessionLike | None = None
        self._q: list[np.ndarray] | None = None
        self._base = 0  # context length of the last proposal
        self.last_draft_cost: float | None = None  # CPU seconds per one-token draft step of the last proposal

    def propose(self, context: Sequence[int], k: int) -> list[int]:
        self._q = None
        k = min(k, self.draft.context_length - len(context))
        if k <= 0 or not context:
            return []
        if self._session is None:
            self._session = self.draft.try_session(context)
            if self._session is None:
                return []
        s = self._session
        logits = s.feed_reusing_prefix(context)
        self._base = len(context)
        drafts: list[int] = []
        qs: list[np.ndarray] = []
        history = list(context)
        t0 = time.process_time()
        for i in range(k):
            if self._sampler is None:
                d = int(np.argmax(logits))
            else:
                q = self._sampler.probs(logits, history)
                d = self._sampler.draw(q)
                qs.append(q)
            drafts.append(d)
            history.append(d)
            if i + 1 < k:
                logits = s.feed([d])
        # The one-token steps only: catching up with the context (after plain steps) is a prefill, not a draft.
        self.last_draft_cost = (time.process_time() - t0) / (k - 1) if k > 1 else None
        self._q = qs if self._sampler is not None else None
        return drafts

    def draft_probs(self) -> list[np.ndarray] | None:
        return self._q

    def accepted(self, n: int) -> None:
        if self._session is not None:
            self._session.truncate(min(self._base + max(0, n), self._session.n_past))

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


# ----------------------------------------------------------------------------------------------- cost model

_COST_ROWS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 24, 33)
_profiles: weakref.WeakKeyDictionary[Any, ForwardProfile] = weakref.WeakKeyDictionary()
_profiles_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class ForwardProfile:
    """cost[r]: CPU seconds of one r-row forward (all rows with logits) on one thread of this machine, r = 0..max_rows
    (cost[0] unused; CPU time, not wall time: other processes on a shared machine stretch the one, not the other); exact_rows: the most rows whose forward gives each row bit-identical logits to one-row forwards (a
    kernel that sums in another order for more rows, as the float GEMM of bf16 weights does, lowers it)."""

    cost: np.ndarray
    exact_rows: int


def forward_profile(model: StepModel, max_rows: int = DEFAULT_SPECULATIVE_TOKENS + 1,
                    repeats: int = 2) -> ForwardProfile:
    """The model's ForwardProfile up to max_rows, measured once per model and cached (through Model.step, row
    counts interleaved, the least CPU time of `repeats` after a warm-up round, other counts interpolated linearly).

    A model with no free slot or too short a context gets an estimate instead (1 row = 1, +10% per extra row,
    exact up to 1 row: no drafts), not cached.
    """
    with _profiles_lock:
        cached = _profiles.get(model)
        if cached is not None and cached.cost.size > max_rows:
            return cached
        # Behind a few hundred cached tokens, as in a chat: extra rows cost attention over them too.
        n_prefix = min(256, model.context_length - max_rows)
        s = model.try_session(()) if n_prefix >= 1 else None
        if s is None:
            return ForwardProfile(1.0 + 0.1 * np.maximum(np.arange(max_rows + 1, dtype=np.float64) - 1, 0), 1)
        rows = [r for r in _COST_ROWS if r < max_rows] + [max_rows]
        times: dict[int, list[float]] = {r: [] for r in rows}
        exact = dict.fromkeys(rows, True)
        threads = model.threads
        try:
            # One thread: its CPU time is the forward's work, with no barrier spinning or waiting for a descheduled
            # peer; the ratios carry over to any thread count that splits both row counts alike.
            model.threads = 1
            rng = np.random.default_rng(0)
            ids = [int(t) for t in rng.integers(0, model.config.n_vocab, n_prefix + max_rows)]
            s.truncate(0)
            s.feed(ids[:n_prefix])
            single = np.stack([s.feed([t]) for t in ids[n_prefix:]])
            for rep in range(repeats + 1):  # the first round warms up
                for r in rows:
                    s.truncate(n_prefix)
                    t0 = time.process_time()
                    out = model.step([s], [ids[n_prefix : n_prefix + r]], r)[0]
                    if rep:
                        times[r].append(time.process_time() - t0)
                    exact[r] = exact[r] and bool(np.array_equal(out, single[:r]))
        finally:
            model.threads = threads
            s.reset()
            s.close()
        best = [max(min(times[r]), 1e-9) for r in rows]
        best = list(np.maximum.accumulate(best))  # more rows never cost less
        exact_rows = 1
        for r in rows:
            if not exact[r]:
                break
            exact_rows = r
        profile = ForwardProfile(np.interp(np.arange(max_rows + 1), rows, best), exact_rows)
        _profiles[model] = profile
        return profile


# ----------------------------------------------------------------------------------------------- controller


def expected_tokens(alpha: float, k: int) -> float:
    """Tokens one verifying forward yields with k drafts, each accepted with probability alpha (the first
    rejection stops the run; the target adds one token of its own): (1 - alpha^(k+1)) / (1 - alpha)."""
    if alpha >= 1.0:
        return k + 1.0
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


class DraftLengthController:
    """Chooses the draft length K maximizing expected tokens per unit of time, 0 (plain decoding) when none pays.

    cost[r]: seconds of an r-row target forward; draft_cost: seconds to draft one token. The acceptance alpha is
    the success rate of draft positions, exponentially weighted (`decay` per observed step, from a prior of
    `prior` over `prior_weight` positions). K is taken only if its predicted speed-up exceeds 1 + `margin`.
    """

    def __init__(self, cost: np.ndarray, k_max: int, draft_cost: float = 0.0, prior: float = 0.5,
                 prior_weight: float = 4.0, decay: float = 0.9, margin: float = 0.08):
        self.cost = np.asarray(cost, dtype=np.float64)
        self.k_max = min(k_max, self.cost.size - 2)
        self.draft_cost = draft_cost
        self.decay, self.margin = decay, margin
        self._hits, self._trials = prior * prior_weight, prior_weight

    @property
    def alpha(self) -> float:
        return self._hits / self._trials

    def speedup(self, k: int) -> float:
        """Predicted tokens per second with k drafts over plain decoding."""
        t = self.cost[k + 1] + k * self.draft_cost
        return expected_tokens(self.alpha, k) * self.cost[1] / t

    def choose(self, cap: int | None = None) -> int:
        k_hi = self.k_max if cap is None else min(cap, self.k_max)
        best, best_s = 0, 1.0 + self.margin
        for k in range(1, k_hi + 1):
            s = self.speedup(k)
            if s > best_s:
                best, best_s = k, s
        return best

    def observe(self, proposed: int, accepted: int) -> None:
        """A step drafted `proposed` tokens of which the first `accepted` were taken."""
        if proposed <= 0:
            return
        accepted = max(0, min(accepted, proposed))
        trials = accepted + (1 if accepted < proposed else 0)
        self._hits = self.decay * self._hits + accepted
        self._trials = self.decay * self._trials + trials


class AdaptiveProposer:
    """A drafter behind draft-length controllers: proposes min(k, the controller's K) tokens and feeds the outcome
    back. `controller(key)` makes the controller of a key. A drafter with `match_length` (prompt lookup) gets one
    controller per match length (key 1, 2, 3, 4 = 4+: their acceptance differs), proposes nothing without a match, and while K is 0 its guess is still checked against the
    next emitted token (free). A draft model is probed with one draft after an interval that doubles (up to 64
    steps) while drafting does not pay.
    """

    MAX_KEY = 4

    def __init__(self, inner: Proposer, controller: Callable[[int], DraftLengthController], cheap: bool):
        self.inner, self.cheap = inner, cheap
        self._make_controller = controller
        self._controllers: dict[int, DraftLengthController] = {}
        self._last: list[int] = []
        self._last_ctl: DraftLengthController | None = None
        self._shadow: tuple[int, int, DraftLengthController] | None = None  # a skipped guess: position, token
        self._idle, self._probe_after = 0, 4
        self._drafting_calls = 0
        self.proposed = self.accepted_total = self.verify_steps = 0

    def controller(self, key: int = 0) -> DraftLengthController:
        ctl = self._controllers.get(key)
        if ctl is None:
            ctl = self._controllers[key] = self._make_controller(key)
        return ctl

    def propose(self, context: Sequence[int], k: int) -> list[int]:
        if self._shadow is not None:
            pos, tok, ctl = self._shadow
            self._shadow = None
            if len(context) > pos:
                ctl.observe(1, int(context[pos] == tok))
        self._last = []
        match_length = getattr(self.inner, "match_length", None)
        key = 0
        if match_length is not None:
            key = min(match_length(context), self.MAX_KEY)
            if key == 0:
                return []
        ctl = self.controller(key)
        k_ctl = ctl.choose(k)
        if k_ctl == 0 and k > 0 and not self.cheap:
            self._idle += 1
            if self._idle >= self._probe_after:
                self._idle, self._probe_after, k_ctl = 0, min(2 * self._probe_after, 64), 1
        elif k_ctl > 0:
            self._idle, self._probe_after = 0, 4
        if k_ctl == 0:
            if self.cheap and k > 0:
                guess = self.inner.propose(context, 1)
                if guess:
                    self._shadow = (len(context), guess[0], ctl)
            return []
        t0 = time.process_time()
        self._last = list(self.inner.propose(context, k_ctl))
        if not self.cheap and self._last:
            per_token = getattr(self.inner, "last_draft_cost", None)
            if per_token is None and not hasattr(self.inner, "last_draft_cost"):
                per_token = (time.process_time() - t0) / len(self._last)
            if per_token is not None:
                self._measure_draft_cost(per_token)
        self._last_ctl = ctl
        return self._last

    def _measure_draft_cost(self, per_token: float) -> None:
        """A costly drafter's CPU time per draft as it runs (its forwards and their overhead in Python; the drafter's
        own `last_draft_cost` when it reports one) replaces the estimate the controllers started from; the first
        measurement, which may include filling the draft's cache, is left out."""
        self._drafting_calls += 1
        if self._drafting_calls == 1:
            return
        for ctl in self._controllers.values():
            ctl.draft_cost = per_token if self._drafting_calls == 2 else 0.8 * ctl.draft_cost + 0.2 * per_token

    def draft_probs(self) -> list[np.ndarray] | None:
        return self.inner.draft_probs() if self._last else None

    def accepted(self, n: int) -> None:
        if self._last and self._last_ctl is not None:
            n = max(0, min(n, len(self._last)))
            self._last_ctl.observe(len(self._last), n)
            self.inner.accepted(n)
            self.proposed += len(self._last)
            self.accepted_total += n
            self.verify_steps += 1
        self._last = []

    def stats(self) -> dict[str, float]:
        """proposed/accepted drafts, verifying forwards that carried drafts, acceptance = accepted / proposed."""
        return {"proposed": self.proposed, "accepted": self.accepted_total, "verify_steps": self.verify_steps,
                "acceptance": self.accepted_total / self.proposed if self.proposed else 0.0}

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


# ----------------------------------------------------------------------------------------------- factory


def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgumentTypeError(f"{name} must be an int, not {type(value).__name__}")
    if not lo <= int(value) <= hi:
        raise InvalidArgumentError(f"{name} must be in [{lo}, {hi}], got {value}")
    return int(value)


def check_speculative(speculative: Any, num_speculative_tokens: Any) -> None:
    """Validate the user-facing options (before any compute): speculative None | "ngram" | a Model."""
    if speculative is not None and speculative != "ngram" and not isinstance(speculative, StepModel):
        if isinstance(speculative, str):
            raise InvalidArgumentError(f"speculative must be 'ngram' or a draft Model, got {speculative!r}")
        raise InvalidArgumentTypeError(
            f"speculative must be None, 'ngram' or a draft Model, not {type(speculative).__name__}")
    _check_int("num_speculative_tokens", num_speculative_tokens, 1, MAX_SPECULATIVE_TOKENS)


def make_proposer(model: StepModel, speculative: Any, num_speculative_tokens: int | None = DEFAULT_SPECULATIVE_TOKENS,
                  params: SamplingParams | None = None) -> AdaptiveProposer | None:
    """The drafter for one generation on `model`: None (no speculation), "ngram" (prompt lookup) or a draft
    Model with the same vocabulary; wrapped in the adaptive controller capped at num_speculative_tokens."""
    if num_speculative_tokens is None:
        num_speculative_tokens = DEFAULT_SPECULATIVE_TOKENS
    check_speculative(speculative, num_speculative_tokens)
    if speculative is None:
        return None
    # Verifying k drafts is a (k+1)-row forward: only as many rows as give bit-identical logits keep greedy
    # output token for token that of plain decoding.
    profile = forward_profile(model, int(num_speculative_tokens) + 1)
    k_max = min(int(num_speculative_tokens), profile.exact_rows - 1)
    cost = profile.cost
    if speculative == "ngram":
        return AdaptiveProposer(NgramProposer(), lambda n: DraftLengthController(cost, k_max, prior=NGRAM_PRIOR[n]),
                                cheap=True)
    draft = speculative
    if draft.config.n_vocab != model.config.n_vocab:
        raise InvalidArgumentError(
            f"the draft model's vocabulary ({draft.config.n_vocab} tokens) differs from the target's "
            f"({model.config.n_vocab})")
    if draft is model:
        raise InvalidArgumentError("the draft model must be another Model than the target")
    draft_cost = float(forward_profile(draft, 1).cost[1])
    return AdaptiveProposer(DraftModelProposer(draft, params),
                            lambda _: DraftLengthController(cost, k_max, draft_cost=draft_cost, prior=0.6), cheap=False)
