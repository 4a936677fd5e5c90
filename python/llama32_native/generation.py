"""The decode loop: one Generation per sequence, one Decoder stepping any set of them together.

Contract: every caller that generates (Model.generate/stream/chat/complete/generate_batch, the server's
scheduler, the CLI, the benchmark) runs on Decoder.step(), which makes exactly one batched forward through
Model.step() per call. A Generation owns its sequence's state: sampler, processors (the one place logits are
changed), proposer (speculative drafts), text stream and finish reason. Stop tokens, stop strings,
max_new_tokens and constraints end a generation at the exact token, whether tokens come one by one or
several per step (accepted drafts, forced tokens). See docs/ARCHITECTURE.md, "Generation core".
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .errors import ContextLengthError, Error, InvalidArgumentError, InvalidArgumentTypeError, NoFreeSlotError
from .processors import LogitsProcessor
from .sampling import Sampler, SamplingParams, verify_token
from .streaming import TextStream


class SessionLike(Protocol):
    """What a Generation needs of its sequence (model.Session is one)."""

    @property
    def n_past(self) -> int: ...

    def common_prefix(self, ids: Sequence[int]) -> int: ...

    def truncate(self, n: int) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class StepModel(Protocol):
    """What the decode loop needs of a model: the step API and its checks (model.Model is one). Generation
    depends on this interface, not on model.py, so the layers read bottom-up."""

    config: Any
    tokenizer: Any

    @property
    def context_length(self) -> int: ...

    @property
    def max_sequences(self) -> int: ...

    def check_ids(self, ids: Any) -> list[int]: ...

    def stop_ids(self, chat: bool = False) -> frozenset[int]: ...

    def step(self, sessions: Sequence[Any], tokens: Sequence[Sequence[int]],
             n_logits: int | Sequence[int] = 1) -> list[np.ndarray]: ...

    def try_session(self, prompt: Sequence[int]) -> Any: ...

__all__ = ["Decoder", "Generation", "StepModel", "SessionLike", "GenerationResult", "TokenLogprob", "TokenUpdate", "MAX_TOP_LOGPROBS"]

MAX_TOP_LOGPROBS = 20


@dataclasses.dataclass
class TokenLogprob:
    """The log-probability of one generated token, and the most likely alternatives at its position."""

    token: int
    logprob: float
    top: list[tuple[int, float]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class TokenUpdate:
    """What one step added to one generation."""

    tokens: list[int]
    text: str
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None  # None: it goes on; "stop", "length" or "error"
    error: Exception | None = None


@dataclasses.dataclass
class GenerationResult:
    """A finished generation: its text and tokens, why it ended, its token counts."""

    text: str
    tokens: list[int]
    finish_reason: str
    n_prompt: int
    logprobs: list[TokenLogprob] | None = None
    error: str | None = None

    @property
    def n_generated(self) -> int:
        return len(self.tokens)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """float64 log-probabilities of float32 logits (-inf entries stay -inf)."""
    x = logits.astype(np.float64)
    m = float(x.max())
    return x - (m + math.log(float(np.exp(x - m).sum())))


class Generation:
    """One sequence being generated: prompt, sampling state, what it produced, and why it ended."""

    def __init__(self, model: StepModel, prompt_ids: Sequence[int], params: SamplingParams, *,
                 processors: Iterable[LogitsProcessor] = (), proposer: Any = None, logprobs: int | None = None,
                 stop_ids: Iterable[int] | None = None, index: int = 0) -> None:
        if not isinstance(params, SamplingParams):
            raise InvalidArgumentTypeError(f"params must be SamplingParams, not {type(params).__name__}")
        if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int)
                                     or not 0 <= logprobs <= MAX_TOP_LOGPROBS):
            raise InvalidArgumentError(f"logprobs must be an int in [0, {MAX_TOP_LOGPROBS}] or None, got {logprobs!r}")
        self.model = model
        self.prompt = model.check_ids(prompt_ids)
        n_ctx = model.context_length
        if len(self.prompt) + params.max_new_tokens > n_ctx:
            raise ContextLengthError(
                f"prompt of {len(self.prompt)} tokens + max_new_tokens={params.max_new_tokens} exceeds the context "
                f"of {n_ctx}", n_prompt=len(self.prompt), max_new_tokens=params.max_new_tokens, n_ctx=n_ctx)
        self.params = params
        self.index = index
        self.processors = list(processors)
        self.proposer = proposer
        self.want_logprobs = logprobs
        self.stop_ids = frozenset(model.stop_ids() if stop_ids is None else stop_ids)
        self.sampler = Sampler(params, model.config.n_vocab)
        tok = model.tokenizer
        self._text = TextStream(tok, params.stop_strings) if tok is not None else None
        self.tokens: list[int] = []
        self.logprobs: list[TokenLogprob] | None = [] if logprobs is not None else None
        self._history = list(self.prompt)  # prompt + generated: what the repetition penalty sees
        self._parts: list[str] = []
        self.finish_reason: str | None = None
        self.error: Exception | None = None
        self.session: SessionLike | None = None
        self._feed: list[int] = []  # tokens the next step feeds: the prompt's uncached part, then [last] + drafts
        self._drafts: list[int] = []
        self._draft_q: list[np.ndarray] | None = None

    # ------------------------------------------------------------------ state
    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def result(self) -> GenerationResult:
        return GenerationResult(self.text, list(self.tokens), self.finish_reason or "length", len(self.prompt),
                                self.logprobs, None if self.error is None else str(self.error))

    # ------------------------------------------------------------------ the Decoder's side
    def start(self, session: SessionLike) -> None:
        """Take a session whose cache may hold a prefix of the prompt; the first step feeds the rest."""
        common = session.common_prefix(self.prompt)
        common = min(common, len(self.prompt) - 1)  # at least one token is fed, to get its logits
        session.truncate(common)
        self.session = session
        self._feed = self.prompt[common:]

    def next_feed(self) -> tuple[list[int], int]:
        """(tokens to feed, how many trailing positions need logits) for the next step."""
        return self._feed, 1 + len(self._drafts)

    def advance(self, rows: np.ndarray) -> TokenUpdate:
        """Consume the logits of the last step (one row per draft + 1) and pick the next token(s)."""
        start_tokens, start_text = len(self.tokens), len(self._parts)
        start_lp = len(self.logprobs) if self.logprobs is not None else 0
        drafts, qs = self._drafts, self._draft_q
        accepted = 0
        for j in range(rows.shape[0]):
            draft = drafts[j] if j < len(drafts) else None
            tok = self._pick(rows[j], draft, None if qs is None or draft is None else qs[j])
            if self._append(tok) or draft is None or tok != draft:
                break
            accepted += 1
        if drafts:  # positions past the last accepted draft hold rejected tokens: roll the cache back
            assert self.session is not None
            self.session.truncate(self.session.n_past - (len(drafts) - accepted))
            if self.proposer is not None:
                self.proposer.accepted(accepted)
        if not self.done:
            last = self.tokens[-1]
            forced = self._forced_tokens()
            self._feed = [last] + forced
            self._drafts, self._draft_q = ([], None) if forced or self.done else self._propose()
            self._feed += self._drafts
        lps = None if self.logprobs is None else self.logprobs[start_lp:]
        return TokenUpdate(self.tokens[start_tokens:], "".join(self._parts[start_text:]), lps, self.finish_reason)

    def fail(self, error: Exception) -> TokenUpdate:
        self.error = error
        self.finish_reason = "error"
        return TokenUpdate([], "", None, "error", error)

    def finish_text(self) -> str:
        """Flush text held back (a partial UTF-8 character or a possible stop-string start) once finished."""
        if self._text is None:
            return ""
        rest = self._text.finish()
        if rest:
            self._parts.append(rest)
        return rest

    # ------------------------------------------------------------------ one token
    def _pick(self, logits: np.ndarray, draft: int | None, q: np.ndarray | None) -> int:
        generated = self.tokens
        for p in self.processors:
            logits = p(logits, generated)
        if draft is None:
            tok = self.sampler.sample(logits, self._history)
        else:
            tok = verify_token(self.sampler, logits, self._history, draft, q)
        if self.logprobs is not None:
            lp = log_softmax(logits)
            k = self.want_logprobs or 0
            top = np.argpartition(-lp, k)[:k] if 0 < k < lp.size else np.arange(0)
            top = top[np.argsort(-lp[top], kind="stable")]
            self.logprobs.append(TokenLogprob(tok, float(lp[tok]), [(int(i), float(lp[i])) for i in top]))
        return tok

    def _append(self, tok: int) -> bool:
        """Record one chosen token; True when the generation ended on it."""
        if tok in self.stop_ids:
            self.finish_reason = "stop"
            return True
        self.tokens.append(tok)
        self._history.append(tok)
        for p in self.processors:
            p.accept(tok)
        if self._text is not None:
            piece = self._text.push(tok)
            if piece:
                self._parts.append(piece)
            if self._text.stopped:
                self.finish_reason = "stop"
                return True
        if any(p.finished() for p in self.processors):
            self.finish_reason = "stop"
        elif len(self.tokens) >= self.params.max_new_tokens:
            self.finish_reason = "length"
        return self.done

    def _forced_tokens(self) -> list[int]:
        """Tokens every processor agrees must come next: appended now, fed with the next step, never sampled."""
        out: list[int] = []
        while not self.done and self.processors:
            forced = next((f for p in self.processors if (f := p.forced())), [])
            if not forced:
                break
            for tok in forced:
                if self.logprobs is not None:
                    self.logprobs.append(TokenLogprob(tok, 0.0, []))
                out.append(tok)
                if self._append(tok):
                    break
        return out

    def _propose(self) -> tuple[list[int], list[np.ndarray] | None]:
        if self.proposer is None:
            return [], None
        assert self.session is not None
        room = min(self.params.max_new_tokens - len(self.tokens) - 1,
                   self.model.context_length - self.session.n_past - 2)
        if room < 1:
            return [], None
        drafts = list(self.proposer.propose(self._history, room))[:room]
        q = self.proposer.draft_probs() if drafts else None
        return drafts, q


class Decoder:
    """Steps a set of generations together: one batched forward per step, admissions between steps."""

    def __init__(self, model: StepModel) -> None:
        self.model = model
        self.waiting: list[Generation] = []
        self.active: list[Generation] = []
        self.forward_calls = 0
        self.max_batch = 0

    def add(self, gen: Generation) -> None:
        self.waiting.append(gen)

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.active)

    def admit(self, limit: int | None = None) -> list[Generation]:
        """Give waiting generations a session (prefix reuse) while slots are free; returns those admitted."""
        admitted = []
        while self.waiting and (limit is None or len(self.active) < limit):
            gen = self.waiting[0]
            session = self.model.try_session(gen.prompt)
            if session is None:
                break
            self.waiting.pop(0)
            gen.start(session)
            self.active.append(gen)
            admitted.append(gen)
        return admitted

    def cancel(self, gen: Generation) -> None:
        """Drop a generation (its client left): its slot is free for the next step."""
        if gen in self.waiting:
            self.waiting.remove(gen)
        if gen in self.active:
            self.active.remove(gen)
            self._release(gen)

    def step(self) -> list[tuple[Generation, TokenUpdate]]:
        """Admit what fits, run one forward over every active generation, and advance each."""
        self.admit()
        gens = list(self.active)
        if not gens:
            if self.waiting:
                raise NoFreeSlotError(f"every sequence slot ({self.model.max_sequences}) is in use: close a session, "
                                      "finish a generator, or raise max_sequences")
            return []
        feeds = [g.next_feed() for g in gens]
        outs = self.model.step([g.session for g in gens], [f[0] for f in feeds], [f[1] for f in feeds])
        self.forward_calls += 1
        self.max_batch = max(self.max_batch, len(gens))
        updates = []
        for gen, rows in zip(gens, outs):
            try:
                upd = gen.advance(rows)
            except Error as e:  # non-finite logits, a failed constraint: this generation only
                upd = gen.fail(e)
            if gen.done:
                rest = gen.finish_text() if gen.error is None else ""
                upd.text += rest
                self.active.remove(gen)
                self._release(gen)
            updates.append((gen, upd))
        return updates

    def close(self) -> None:
        """Release every slot (an abandoned or interrupted run)."""
        for gen in self.active:
            self._release(gen)
        self.active.clear()
        self.waiting.clear()

    @staticmethod
    def _release(gen: Generation) -> None:
        if gen.session is not None:
            gen.session.close()
            gen.session = None
        close = getattr(gen.proposer, "close", None)
        if close is not None:  # a draft model's session goes back to its pool
            close()
