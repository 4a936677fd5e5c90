"""Model: load weights into the C++ engine, run forward passes, generate text.

Contract (docs/ARCHITECTURE.md): every public method validates its arguments before any C++ work; errors are
the package's own types; the GIL is released inside every compute call (in the binding). All model work goes
through the step API (Model.step over Sessions in a SlotPool); generating goes through generation.Decoder.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, Iterator, Mapping, Sequence, Union

import numpy as np

from . import _core
from .config import LlamaConfig
from .errors import (
    ContextLengthError,
    Error,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    ModelClosedError,
    NoFreeSlotError,
    NumericalError,
    TensorShapeError,
)
from .generation import Decoder, Generation, GenerationResult, TokenUpdate
from .loading import Tensor
from .loading.synthetic import GeneratedTensors
from .memory import check_load
from .schema import matrix_names, tensor_plan, vector_names

QUANTS = ("f32", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl")
KV_TYPES = ("f32", "f16", "q8_0")
PREFILL_CHUNK = 512  # rows per forward call while feeding a long prompt: bounds activation memory
Prompt = Union[str, Sequence[int]]


DEFAULT_CONTEXT_LENGTH = 8192  # positions reserved when the caller names none (the CLI's default too)


def default_threads() -> int:
    """The threads a model gets by default: the CPUs this process may use (affinity, cgroup quota, physical cores),
    fewer while other processes keep some of them busy (threads.threads_for_load)."""
    from .threads import threads_for_load

    return threads_for_load()


def resolve_context_length(value: int | None, config: LlamaConfig) -> int:
    """None: DEFAULT_CONTEXT_LENGTH capped at the model's maximum; an explicit value above that maximum is an error."""
    from .errors import InvalidArgumentError

    default = min(DEFAULT_CONTEXT_LENGTH, config.n_ctx)
    if value is None:
        return default
    n = _check_int_arg("context_length", value, 1, 1 << 40)
    if n > config.n_ctx:
        raise InvalidArgumentError(f"context_length={n} exceeds this model's maximum of {config.n_ctx} positions; "
                                   f"pass at most {config.n_ctx}, or leave it out for {default}")
    return n


def _matrix_shape(config: LlamaConfig, name: str) -> tuple[int, int]:
    c = config
    short = name.split(".")[-1]
    shapes = {"tok_embd": (c.n_vocab, c.n_embd), "output": (c.n_vocab, c.n_embd), "attn_q": (c.q_dim, c.n_embd),
              "attn_k": (c.kv_dim, c.n_embd), "attn_v": (c.kv_dim, c.n_embd), "attn_output": (c.n_embd, c.q_dim),
              "ffn_gate": (c.n_ff, c.n_embd), "ffn_up": (c.n_ff, c.n_embd), "ffn_down": (c.n_embd, c.n_ff)}
    return shapes[short]


def _load_plan(ckpt: Any, quant: str | None, source: str) -> tuple[dict[str, str] | None, str]:
    """(plan, quant) for from_pretrained: a saved model's own plan; a GGUF's formats unless quant= asks for
    another (then one line says what is converted); quant or q4_0 for the rest."""
    if ckpt.plan is not None:
        return ckpt.plan, ckpt.quant or quant or "q4_0"
    file_plan = getattr(ckpt, "file_plan", None)
    if file_plan is None:
        return None, quant or "q4_0"
    if quant is None:
        counts: dict[str, int] = {}
        for kind in file_plan.values():
            counts[kind] = counts.get(kind, 0) + 1
        return dict(file_plan), max(counts, key=lambda k: counts[k])
    plan = tensor_plan(ckpt.config, quant)
    changed = sorted({f"{file_plan[n]} -> {k}" for n, k in plan.items() if n in file_plan and file_plan[n] != k})
    if changed and quant != "f32":  # to f32 nothing is lost: no notice
        import logging

        logging.getLogger("llama32_native").warning(
            "%s: quant=%s rounds the file's weights a second time (%s); omit quant= to keep them as they are",
            source, quant, ", ".join(changed))
    return plan, quant


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise InvalidArgumentError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _check_int_arg(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgumentTypeError(f"{name} must be an integer, got {type(value).__name__}")
    if not lo <= int(value) <= hi:
        raise InvalidArgumentError(f"{name}={value} is out of range [{lo}, {hi}]")
    return int(value)


def _core_config(config: LlamaConfig) -> dict[str, Any]:
    return {
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_head_kv": config.n_head_kv,
        "head_dim": config.head_dim,
        "n_ff": config.n_ff,
        "n_vocab": config.n_vocab,
        "rms_eps": config.rms_eps,
        "rope_inv_freq": [float(x) for x in config.rope_inv_freq().astype(np.float32)],
        "tie_word_embeddings": config.tie_word_embeddings,
    }


class _Progress:
    """A minimal progress bar on stderr for long loads (tqdm when it is installed)."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.bar = None
        self.enabled = enabled and total > 0
        self.total, self.done, self.desc = total, 0, desc
        if self.enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, leave=False)
            except ImportError:
                pass

    def update(self, n: int) -> None:
        if not self.enabled:
            return
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        else:
            pct = 100.0 * self.done / self.total
            sys.stderr.write(f"\r{self.desc}: {pct:5.1f}%")
            sys.stderr.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        else:
            sys.stderr.write("\r" + " " * (len(self.desc) + 10) + "\r")
            sys.stderr.flush()


class SlotPool:
    """The model's KV-cache slots: which are free, and what each free slot's cache still holds.

    A released slot keeps its tokens, so the next generation whose prompt starts the same way reuses them
    (prefix caching across calls and across the server's requests); an empty session takes the slot
    used least recently.
    """

    def __init__(self, n_slots: int) -> None:
        self.capacity = n_slots
        self._free: dict[int, list[int]] = {slot: [] for slot in range(n_slots)}  # in release order

    @property
    def n_free(self) -> int:
        return len(self._free)

    def acquire(self, prompt: Sequence[int] | None) -> tuple[int, list[int]] | None:
        """The free slot whose cache shares the longest prefix with prompt (None: empty it), or None if none is free."""
        if not self._free:
            return None
        slot, best = next(iter(self._free)), 0
        if prompt is not None:
            for s, cached in self._free.items():
                n = _common_prefix(cached, prompt)
                if n > best:
                    slot, best = s, n
        tokens = self._free.pop(slot)
        if prompt is None:
            tokens.clear()
        return slot, tokens

    def release(self, slot: int, tokens: list[int]) -> None:
        self._free[slot] = tokens


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n], dtype=np.int64) != np.asarray(b[:n], dtype=np.int64))
    return int(diff[0]) if diff.size else n


class Session:
    """One sequence and its KV cache: the low-level loop for custom decoding, logprobs and benchmarks."""

    def __init__(self, model: Model, slot: int, tokens: list[int]) -> None:
        self._model = model
        self._slot = slot
        self._tokens = tokens  # what the cache holds, position by position
        self._closed = False

    @property
    def slot(self) -> int:
        """The KV-cache slot this session owns (the `seq` index of its forward rows)."""
        return self._slot

    @property
    def n_past(self) -> int:
        return len(self._tokens)

    @property
    def tokens(self) -> list[int]:
        return list(self._tokens)

    @property
    def closed(self) -> bool:
        return self._closed

    def common_prefix(self, ids: Sequence[int]) -> int:
        """How many leading tokens of ids the cache already holds."""
        return _common_prefix(self._tokens, ids)

    def reset(self) -> None:
        """Empty the cache (the buffers stay allocated)."""
        self.truncate(0)

    def truncate(self, n: int) -> None:
        """Roll the cache back to its first n tokens (0 <= n <= n_past); later feeds overwrite the rest."""
        n = _check_int_arg("n", n, 0, len(self._tokens))
        with self._model._lock:
            self._check_open()
            del self._tokens[n:]

    def feed(self, ids: Sequence[int], all_logits: bool = False) -> np.ndarray:
        """Append tokens (one batched pass per chunk); float32 logits of the last one, or of all with all_logits."""
        ids = self._model.check_ids(ids)
        out = self._model.step([self], [ids], len(ids) if all_logits else 1)[0]
        if not np.isfinite(out).all():
            raise NumericalError("the forward pass produced non-finite logits")
        return out if all_logits else out[0]

    def feed_reusing_prefix(self, ids: Sequence[int]) -> np.ndarray:
        """Make the cache hold exactly `ids`, recomputing only the part that differs from what it holds."""
        ids = self._model.check_ids(ids)
        with self._model._lock:  # validate everything before the truncate: invalid input changes no state
            self._check_open()
            n_ctx = self._model.context_length
            if len(ids) > n_ctx:
                raise ContextLengthError(f"{len(ids)} tokens exceed the context of {n_ctx}", n_prompt=len(ids),
                                         max_new_tokens=0, n_ctx=n_ctx)
            common = min(self.common_prefix(ids), len(ids) - 1)  # at least one token is fed, to get its logits
            self.truncate(common)
            return self.feed(ids[common:])

    def close(self) -> None:
        with self._model._lock:
            if not self._closed:
                self._closed = True
                self._model._pool.release(self._slot, self._tokens)

    def __del__(self) -> None:
        # A generator abandoned without close() must still give its slot back when it is collected.
        if not getattr(self, "_closed", True):
            self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ModelClosedError("this session is closed")
        self._model._check_open()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Session(slot={self._slot}, n_past={self.n_past}{', closed' if self._closed else ''})"


class Model:
    """A Llama 3.2 model in the C++ engine. Construct with `from_pretrained` or `random`."""

    def __init__(self, config: LlamaConfig, tensors: Mapping[str, Tensor], *, quant: str = "q4_0",
                 threads: int | None = None, context_length: int | None = None, kv_cache: str = "f16",
                 max_sequences: int = 8, tokenizer: Any = None, chat_format: Any = None,
                 plan: Mapping[str, str] | None = None, progress: bool | None = None, source: str = ""):
        _check_choice("quant", quant, QUANTS)
        _check_choice("kv_cache", kv_cache, KV_TYPES)
        threads = default_threads() if threads is None else _check_int_arg("threads", threads, 1, 1024)
        context_length = resolve_context_length(context_length, config)
        max_sequences = _check_int_arg("max_sequences", max_sequences, 1, 4096)
        if "output" in tensors and config.tie_word_embeddings:  # an explicit head wins over the tie (docs/MODEL.md)
            import dataclasses

            config = dataclasses.replace(config, tie_word_embeddings=False)
        self.config = config
        self.quant = quant
        self.tokenizer = tokenizer
        self.source = source
        self._chat_format = chat_format
        self._lock = threading.RLock()
        self._closed = False
        self._pool = SlotPool(max_sequences)
        self.engine_seconds = 0.0  # time spent inside the engine's forward (the benchmark's Python share)
        check_load(config, tensors, plan, quant=quant, context_length=context_length,  # before any allocation
                   max_sequences=max_sequences, kv_cache=kv_cache)
        self._engine = _core.Engine(_core_config(config), context_length, max_sequences, kv_cache, threads)
        plan = dict(plan) if plan is not None else tensor_plan(config, quant)
        self._plan = plan  # the in-memory type of every matrix (info())
        self._load_tensors(tensors, plan, progress)

    # ------------------------------------------------------------------ construction
    def _load_tensors(self, tensors: Mapping[str, Tensor], plan: Mapping[str, str], progress: bool | None) -> None:
        cfg = self.config
        required = matrix_names(cfg) + vector_names(cfg)
        total = sum(int(tensors[n].data.nbytes) for n in required if n in tensors)
        if progress is None:
            progress = total > (256 << 20) and sys.stderr.isatty()
        bar = _Progress(total, "loading weights", progress)
        try:
            for name in required:
                t = tensors.get(name)
                if t is None:
                    from .errors import MissingTensorError

                    raise MissingTensorError(f"tensor {name!r} is missing")
                target = plan.get(name, "f32")
                if target in ("q8_0", "q4_0", "q4_1", "iq4_nl") and t.shape[-1] % 32 != 0:
                    raise TensorShapeError(
                        f"tensor {name}: width {t.shape[-1]} is not a multiple of 32, which {target} needs; "
                        f"load with quant='bf16' or 'f32'"
                    )
                data = np.ascontiguousarray(t.data)
                if data.ctypes.data % 16:  # safetensors promises no alignment; the core reads typed elements
                    data = data.copy()
                try:
                    self._engine.set_tensor(name, t.kind, data, list(t.shape), target)
                except _core.CoreError as e:
                    raise TensorShapeError(str(e)) from None
                bar.update(int(t.data.nbytes))
                if isinstance(tensors, GeneratedTensors):  # the engine has its copy: free ours now
                    del tensors[name], t, data
            self._engine.finalize()
        finally:
            bar.close()

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, quant: str | None = None, threads: int | None = None,
                        context_length: int | None = None, kv_cache: str = "f16", max_sequences: int = 8,
                        check_tensors: bool = False, progress: bool | None = None) -> "Model":
        """Load a Hugging Face directory, a .gguf file, or a file written by Model.save().

        quant=None keeps what the file holds: a GGUF's tensors stay in their own formats (docs/FORMATS.md: Q4_K as
        q4_1, Q5/Q6 kinds as q8_0), a saved model as saved; a Hugging Face directory becomes q4_0. A quant that
        rounds a GGUF's weights again says so in one line on the `llama32_native` logger.
        """
        from .hub import resolve_model
        from .loading.open import open_checkpoint

        if quant is not None:
            _check_choice("quant", quant, QUANTS)
        path = resolve_model(path)  # a path, a short name like "smollm2", or a Hugging Face repo id
        ckpt = open_checkpoint(path, check_tensors=check_tensors)
        try:
            plan, quant = _load_plan(ckpt, quant, os.fspath(path))
            return cls(ckpt.config, ckpt.tensors, quant=quant, threads=threads,
                       context_length=context_length, kv_cache=kv_cache, max_sequences=max_sequences,
                       tokenizer=ckpt.tokenizer, chat_format=ckpt.chat_format, plan=plan,
                       progress=progress, source=os.fspath(path))
        finally:
            ckpt.close()

    @classmethod
    def random(cls, config: LlamaConfig | str, quant: str = "q4_0", seed: int = 0, threads: int | None = None,
               context_length: int | None = None, kv_cache: str = "f16", max_sequences: int = 8,
               tokenizer: Any = None) -> "Model":
        """Synthetic weights of an exact architecture (a preset name or a LlamaConfig), for benchmarks and tests.

        Quantized matrices are drawn directly as random blocks (speed does not depend on values), f32/bf16
        ones as uniform values of std 0.02; norms are 1.
        """
        from .loading.synthetic import random_tensors

        if isinstance(config, str):
            config = LlamaConfig.preset(config)
        if not isinstance(config, LlamaConfig):
            raise InvalidArgumentTypeError(f"config must be a preset name or a LlamaConfig, not {type(config).__name__}")
        _check_choice("quant", quant, QUANTS)
        plan = tensor_plan(config, quant)
        tensors = random_tensors(config, plan, seed)
        return cls(config, tensors, quant=quant, threads=threads, context_length=context_length,
                   kv_cache=kv_cache, max_sequences=max_sequences, tokenizer=tokenizer, plan=plan,
                   source=f"random(seed={seed})")

    def info(self) -> dict[str, Any]:
        """What the engine holds: the format(s) and bytes of each tensor group (tok_embd, output, attn_q, ...,
        ffn_down), all weight bytes, and the weight bytes one decode step reads (every matrix but the embedding
        table, of which one row)."""
        from .schema import engine_nbytes

        with self._lock:
            self._check_open()
            groups: dict[str, dict[str, Any]] = {}
            per_token = 0
            for name in matrix_names(self.config):
                kind = self._plan.get(name, "f32")
                shape = _matrix_shape(self.config, name)
                nbytes = engine_nbytes(kind, shape)
                group = name.split(".")[-1]
                g = groups.setdefault(group, {"formats": {}, "tensors": 0, "bytes": 0})
                g["formats"][kind] = g["formats"].get(kind, 0) + 1
                g["tensors"] += 1
                g["bytes"] += nbytes
                read_whole = name != "tok_embd" or self.config.tie_word_embeddings
                per_token += nbytes if read_whole else nbytes // shape[0]
            return {"source": self.source, "quant": self.quant, "isa": self.isa, "threads": self.threads,
                    "weight_bytes": self.weight_bytes, "bytes_per_token": per_token, "groups": groups}

    # ------------------------------------------------------------------ properties
    @property
    def _live_engine(self) -> Any:
        engine = self._engine
        if engine is None:
            raise ModelClosedError("the model is closed")
        return engine

    @property
    def context_length(self) -> int:
        return int(self._live_engine.n_ctx)

    @property
    def threads(self) -> int:
        return int(self._live_engine.threads)

    @threads.setter
    def threads(self, n: int) -> None:
        n = _check_int_arg("threads", n, 1, 1024)
        with self._lock:
            self._live_engine.threads = n

    @property
    def isa(self) -> str:
        return str(self._live_engine.isa)

    @property
    def weight_bytes(self) -> int:
        return int(self._live_engine.weight_bytes)

    @property
    def chat_format(self) -> Any:
        if self._chat_format is None and self.tokenizer is not None:
            from .chat import chat_format_for

            self._chat_format = chat_format_for(self.tokenizer)
        return self._chat_format

    # ------------------------------------------------------------------ the step API
    def _check_open(self) -> None:
        if self._closed:
            raise ModelClosedError("the model is closed")

    def check_ids(self, ids: Any) -> list[int]:
        """ids as a list of ints after checking it is a non-empty 1-D sequence of ids in [0, n_vocab)."""
        if isinstance(ids, (str, bytes)):
            raise InvalidArgumentTypeError("expected a sequence of token ids, got a string")
        try:
            arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
        except (TypeError, ValueError) as e:
            raise InvalidArgumentTypeError(f"expected a sequence of token ids: {e}") from None
        if arr.ndim != 1 or arr.size == 0:
            raise InvalidArgumentError("expected a non-empty 1-D sequence of token ids")
        if not np.issubdtype(arr.dtype, np.integer):
            raise InvalidArgumentTypeError(f"token ids must be integers, got dtype {arr.dtype}")
        bad = (arr < 0) | (arr >= self.config.n_vocab)
        if bad.any():
            raise InvalidArgumentError(f"token id {int(arr[bad][0])} is out of range [0, {self.config.n_vocab})")
        return [int(x) for x in arr]

    def _forward(self, tokens: np.ndarray, pos: np.ndarray, seq: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The one call into the engine: rows of (token, position, slot); logits of the rows listed in `rows`."""
        t = time.perf_counter()
        try:
            return self._live_engine.forward(tokens, pos, seq, rows)
        finally:
            self.engine_seconds += time.perf_counter() - t

    def step(self, sessions: Sequence[Session], tokens: Sequence[Sequence[int]],
             n_logits: int | Sequence[int] = 1) -> list[np.ndarray]:
        """One batched forward: append tokens[i] to sessions[i] for every i, all rows sharing each weight read.

        Any mix works: a prompt (prefill), one token (decode), K+1 tokens (verifying K drafts). n_logits[i]
        trailing positions of item i get logits: the result is a list of float32 [n_logits[i], n_vocab].
        Everything is validated before any compute; long inputs run as several forwards of at most
        PREFILL_CHUNK rows.
        """
        sessions, tokens = list(sessions), [self.check_ids(t) for t in tokens]
        if len(sessions) != len(tokens):
            raise InvalidArgumentError(f"{len(sessions)} sessions but {len(tokens)} token lists")
        want = [n_logits] * len(tokens) if isinstance(n_logits, (int, np.integer)) else list(n_logits)
        if len(want) != len(tokens):
            raise InvalidArgumentError(f"n_logits has {len(want)} entries for {len(tokens)} sessions")
        want = [_check_int_arg("n_logits", w, 1, len(t)) for w, t in zip(want, tokens)]
        with self._lock:
            self._check_open()
            if len({id(s) for s in sessions}) != len(sessions):
                raise InvalidArgumentError("a session appears twice in one step")
            n_ctx = self.context_length
            for s, t in zip(sessions, tokens):
                if not isinstance(s, Session) or s._model is not self:
                    raise InvalidArgumentTypeError("sessions must be Sessions of this model")
                s._check_open()
                if s.n_past + len(t) > n_ctx:
                    raise ContextLengthError(f"{s.n_past} cached + {len(t)} new tokens exceed the context of {n_ctx}",
                                             n_prompt=s.n_past + len(t), max_new_tokens=0, n_ctx=n_ctx)
            return self._step_locked(sessions, tokens, want)

    def _step_locked(self, sessions: list[Session], tokens: list[list[int]], want: list[int]) -> list[np.ndarray]:
        # Rows of every item, in order; an item's logits rows are its last want[i] positions.
        items = [(i, p) for i, t in enumerate(tokens) for p in range(len(t))]
        base = [s.n_past for s in sessions]
        outs: list[list[np.ndarray]] = [[] for _ in tokens]
        for c0 in range(0, len(items), PREFILL_CHUNK):
            chunk = items[c0 : c0 + PREFILL_CHUNK]
            tok = np.fromiter((tokens[i][p] for i, p in chunk), np.int32, len(chunk))
            pos = np.fromiter((base[i] + p for i, p in chunk), np.int32, len(chunk))
            seq = np.fromiter((sessions[i]._slot for i, _ in chunk), np.int32, len(chunk))
            rows = [r for r, (i, p) in enumerate(chunk) if p >= len(tokens[i]) - want[i]]
            logits = self._forward(tok, pos, seq, np.asarray(rows, np.int32))
            for k, r in enumerate(rows):
                outs[chunk[r][0]].append(logits[k])
            for i in dict.fromkeys(i for i, _ in chunk):  # what each cache now holds, chunk by chunk
                sessions[i]._tokens.extend(tokens[i][p] for j, p in chunk if j == i)
        return [np.stack(o) for o in outs]

    def session(self) -> Session:
        """A new, empty sequence with its own KV-cache slot (close it, or use it as a context manager)."""
        with self._lock:
            self._check_open()
            got = self._pool.acquire(None)
            if got is None:
                raise NoFreeSlotError(f"every sequence slot ({self._pool.capacity}) is in use: close a session, "
                                      "finish a generator, or raise max_sequences")
            return Session(self, *got)

    def try_session(self, prompt: Sequence[int]) -> Session | None:
        """A free slot for a generation of `prompt`, holding the longest cached prefix of it; None when none is free."""
        with self._lock:
            self._check_open()
            got = self._pool.acquire(prompt)
            return None if got is None else Session(self, *got)

    @property
    def free_slots(self) -> int:
        """Sequence slots not held by a session or a running generation."""
        return self._pool.n_free

    @property
    def max_sequences(self) -> int:
        return self._pool.capacity

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """float32 [len(ids), n_vocab]: the logits at every position of a fresh sequence from position 0."""
        ids = self.check_ids(ids)
        with self.session() as s:
            return s.feed(ids, all_logits=True)

    # ------------------------------------------------------------------ text
    def _require_tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise Error("this model has no tokenizer: pass token ids, or load a checkpoint that carries one")
        return self.tokenizer

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt: text is encoded with BOS (when the model uses one); ids are checked."""
        if isinstance(prompt, str):
            ids = self._require_tokenizer().encode(prompt, bos=True)
            if not ids:
                raise InvalidArgumentError("the prompt is empty (and this model adds no BOS token)")
            return ids
        return self.check_ids(prompt)

    def chat_ids(self, messages: Sequence[Mapping[str, Any]], date_string: str | None = None) -> list[int]:
        """The token ids of a conversation in the model's chat format, ending with the assistant's header."""
        fmt = self.chat_format
        if fmt is None:
            raise Error("this model's tokenizer has no known chat format")
        kwargs = {"date_string": date_string} if date_string is not None else {}
        return fmt.encode(messages, add_generation_prompt=True, **kwargs)

    def stop_ids(self, chat: bool = False) -> frozenset[int]:
        """Token ids that end a generation: the config's and tokenizer's end tokens (+ the chat format's)."""
        ids = set(self.config.eos_token_ids)
        if self.tokenizer is not None:
            ids |= set(self.tokenizer.stop_tokens)
        fmt = self.chat_format if chat else self._chat_format
        if fmt is not None:
            ids |= set(fmt.stop_tokens)
        return frozenset(i for i in ids if 0 <= i < self.config.n_vocab)

    def generation(self, prompt_ids: Sequence[int], chat: bool = False, index: int = 0,
                   **options: Any) -> Generation:
        """A Generation of prompt_ids with generate()'s options, validated, ready for a Decoder."""
        from .options import build_generation

        return build_generation(self, prompt_ids, chat=chat, index=index, **options)

    def _run(self, gens: list[Generation], raise_errors: bool = True) -> Iterator[tuple[Generation, TokenUpdate]]:
        """Decode generations together until all are done; yields each step's updates. A generation that fails
        raises its error, or with raise_errors=False just ends (its result carries the error)."""
        decoder = Decoder(self)
        for g in gens:
            decoder.add(g)
        try:
            while decoder.busy:
                for gen, upd in decoder.step():
                    if upd.error is not None and raise_errors:
                        raise upd.error
                    yield gen, upd
        finally:
            decoder.close()

    def generate_tokens(self, prompt: Prompt, session: Session | None = None, **options: Any) -> Iterator[int]:
        """Token ids as they are sampled (stop tokens are not yielded); with session=, decode in that session."""
        gen = self.generation(self.prompt_ids(prompt), **options)
        self._check_open()
        if session is None:
            return (t for _, upd in self._run([gen]) for t in upd.tokens)
        return self._tokens_in(session, gen)

    def _tokens_in(self, session: Session, gen: Generation) -> Iterator[int]:
        gen.start(session)
        while not gen.done:
            feed, n_logits = gen.next_feed()
            rows = self.step([session], [feed], n_logits)[0]
            upd = gen.advance(rows)
            yield from upd.tokens

    def stream(self, prompt: Prompt, **options: Any) -> Iterator[str]:
        """Text chunks as they are generated; each is whole UTF-8, and they add up to generate()'s text."""
        gen = self.generation(self.prompt_ids(prompt), **options)
        self._require_tokenizer()
        return self._text_of(gen)

    def _text_of(self, gen: Generation) -> Iterator[str]:
        for _, upd in self._run([gen]):
            if upd.text:
                yield upd.text

    def generate(self, prompt: Prompt, **options: Any) -> str:
        """The generated continuation of a prompt (a string, or token ids)."""
        return "".join(self.stream(prompt, **options))

    def complete(self, prompt: Prompt, **options: Any) -> GenerationResult:
        """Like generate(), with the details: tokens, finish reason, token counts, logprobs (logprobs=k)."""
        gen = self.generation(self.prompt_ids(prompt), **options)
        for _ in self._run([gen]):
            pass
        return gen.result()

    def chat(self, messages: Sequence[Mapping[str, Any]], stream: bool = False, date_string: str | None = None,
             **options: Any) -> Any:
        """Answer a conversation [{"role": ..., "content": ...}, ...] in the model's chat format.

        With tools=[...] (OpenAI's function tools; tool_choice, parallel_tool_calls) or a history holding assistant
        tool_calls or tool results, the answer is a tools.ChatReply: content and/or ToolCall objects.
        """
        from .tools import chat_with_tools, has_tool_turns

        if options.get("tools") is not None or has_tool_turns(messages):
            return chat_with_tools(self, messages, stream=stream, date_string=date_string, **options)
        gen = self.generation(self.chat_ids(messages, date_string), chat=True, **options)
        chunks = self._text_of(gen)
        return chunks if stream else "".join(chunks)

    def complete_batch(self, prompts: Sequence[Any], per_prompt: Sequence[Mapping[str, Any]] | None = None,
                       chat: bool = False, errors: str = "raise", **options: Any) -> list[GenerationResult]:
        """Generate for several prompts (message lists with chat=True), decoded together as slots allow.

        per_prompt: one dict of option overrides per prompt. errors="return": a prompt that cannot run (too
        long, bad ids, bad options) gives a result with .error and finish_reason "error" instead of raising.
        """
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
            raise InvalidArgumentTypeError("prompts must be a list of prompts (strings or token-id lists)")
        _check_choice("errors", errors, ("raise", "return"))
        if per_prompt is not None and len(per_prompt) != len(prompts):
            raise InvalidArgumentError(f"per_prompt has {len(per_prompt)} entries for {len(prompts)} prompts")
        gens: list[Generation | None] = []
        failed: dict[int, str] = {}
        for i, p in enumerate(prompts):
            opts = {**options, **(per_prompt[i] if per_prompt is not None else {})}
            try:
                ids = self.chat_ids(p) if chat else self.prompt_ids(p)
                seed = opts.get("seed")
                if isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 1 << 64:
                    opts["seed"] = (seed + i) % (1 << 64)  # each sequence its own stream, reproducible from one seed
                gens.append(self.generation(ids, chat=chat, index=i, **opts))
            except Error as e:
                if errors == "raise":
                    raise
                gens.append(None)
                failed[i] = str(e)
        for _ in self._run([g for g in gens if g is not None], raise_errors=errors == "raise"):
            pass
        return [g.result() if g is not None else GenerationResult("", [], "error", 0, None, failed[i])
                for i, g in enumerate(gens)]

    def generate_batch(self, prompts: Sequence[Prompt], **options: Any) -> list[str]:
        """Generate for several prompts, decoding all sequences in one forward per step."""
        return [r.text for r in self.complete_batch(prompts, **options)]

    # ------------------------------------------------------------------ persistence and lifetime
    def save(self, path: str | os.PathLike) -> None:
        """Write one pre-quantized file; from_pretrained(path) maps it back without requantizing."""
        from .loading.native import save_model

        with self._lock:
            self._check_open()
            save_model(self, path)

    def tensor_data(self, name: str) -> tuple[str, np.ndarray]:
        """(kind, array) of one weight as the engine holds it (panels unpacked to rows): for save() and exports."""
        return self._live_engine.tensor(name)

    def close(self) -> None:
        """Free the weights and the KV cache; later calls raise ModelClosedError."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._engine = None

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        c = self.config
        state = "closed" if self._closed else f"isa={self.isa}, threads={self.threads}"
        return (f"Model(n_layer={c.n_layer}, n_embd={c.n_embd}, n_head={c.n_head}/{c.n_head_kv}, "
                f"quant={self.quant}, ctx={self.context_length if not self._closed else '-'}, {state})")
