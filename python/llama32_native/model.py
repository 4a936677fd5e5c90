"""Model: load weights into the C++ engine, run forward passes, generate text.

Contract (DESIGN.md §3): every public method validates its arguments before any C++ work; errors are
the package's own types; the GIL is released inside every compute call (in the binding).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, Iterator, Mapping, Sequence, Union

import numpy as np

from . import _core
from .config import LlamaConfig
from .errors import (
    ContextLengthError,
    Error,
    ModelClosedError,
    NumericalError,
    TensorShapeError,
)
from .loading import Tensor
from .loading.synthetic import GeneratedTensors

QUANTS = ("f32", "bf16", "q8_0", "q4_0")
KV_TYPES = ("f32", "f16", "q8_0")
PREFILL_CHUNK = 512  # rows per forward call while feeding a long prompt: bounds activation memory
Prompt = Union[str, Sequence[int]]


DEFAULT_CONTEXT_LENGTH = 8192  # positions reserved when the caller names none (the CLI's default too)


def default_threads() -> int:
    """CPUs this process may use: affinity, cgroup quota, physical cores (threads.default_threads)."""
    from .threads import default_threads as threads_default

    return threads_default()


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


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _check_int_arg(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if not lo <= int(value) <= hi:
        raise ValueError(f"{name}={value} is out of range [{lo}, {hi}]")
    return int(value)


def tensor_plan(config: LlamaConfig, quant: str) -> dict[str, str]:
    """The in-memory type of every matrix for a quant mode.

    q4_0 keeps the embedding table and output layer at 8 bits (q8_0), as Meta's quantized Llama 3.2 does:
    they are the largest matrices and the most sensitive to 4-bit error.
    """
    plan = {}
    names = ["tok_embd"] + ([] if config.tie_word_embeddings else ["output"])
    per_layer = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    for name in names:
        plan[name] = "q8_0" if quant == "q4_0" else quant
    for i in range(config.n_layer):
        for t in per_layer:
            plan[f"blk.{i}.{t}"] = quant
    return plan


def matrix_names(config: LlamaConfig) -> list[str]:
    return list(tensor_plan(config, "f32"))


def vector_names(config: LlamaConfig) -> list[str]:
    names = ["output_norm"]
    for i in range(config.n_layer):
        names += [f"blk.{i}.attn_norm", f"blk.{i}.ffn_norm"]
    return names


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


class Session:
    """One sequence and its KV cache: the low-level loop for custom decoding, logprobs and benchmarks."""

    def __init__(self, model: "Model", slot: int, tokens: list[int] | None = None):
        self._model = model
        self._slot = slot
        # What the cache holds, position by position. The default slot's list lives in the model (so the next
        # call can reuse its prefix) and is shared by the short-lived Session that borrows that slot.
        self._tokens: list[int] = [] if tokens is None else tokens
        self._closed = False

    @property
    def n_past(self) -> int:
        return len(self._tokens)

    @property
    def tokens(self) -> list[int]:
        return list(self._tokens)

    def reset(self) -> None:
        """Empty the cache (the buffers stay allocated)."""
        self._tokens.clear()

    def truncate(self, n: int) -> None:
        """Keep only the first n cached tokens (positions past n are overwritten by later feeds)."""
        del self._tokens[max(0, min(n, len(self._tokens))):]

    def feed(self, ids: Sequence[int], all_logits: bool = False) -> np.ndarray:
        """Append tokens (one batched pass per chunk); float32 logits of the last one, or of all with all_logits."""
        with self._model._lock:  # one feed is atomic: its positions follow n_past even with other threads
            return self._feed_locked(ids, all_logits)

    def _feed_locked(self, ids: Sequence[int], all_logits: bool) -> np.ndarray:
        self._check_open()
        ids = self._model._check_ids(ids)
        n_ctx = self._model.context_length
        if self.n_past + len(ids) > n_ctx:
            raise ContextLengthError(
                f"{self.n_past} cached + {len(ids)} new tokens exceed the context of {n_ctx}",
                n_prompt=self.n_past + len(ids), max_new_tokens=0, n_ctx=n_ctx,
            )
        outs = []
        for start in range(0, len(ids), PREFILL_CHUNK):
            chunk = ids[start : start + PREFILL_CHUNK]
            n = len(chunk)
            pos = np.arange(self.n_past, self.n_past + n, dtype=np.int32)
            rows = np.arange(n, dtype=np.int32) if all_logits else np.array([n - 1], dtype=np.int32)
            if not all_logits and start + PREFILL_CHUNK < len(ids):
                rows = np.zeros(0, dtype=np.int32)
            logits = self._model._forward(np.asarray(chunk, dtype=np.int32), pos,
                                          np.full(n, self._slot, dtype=np.int32), rows)
            self._tokens.extend(int(t) for t in chunk)
            if len(rows):
                outs.append(logits)
        out = np.concatenate(outs) if all_logits else outs[-1][0]
        if not np.isfinite(out).all():
            raise NumericalError("the forward pass produced non-finite logits")
        return out

    def feed_reusing_prefix(self, ids: Sequence[int]) -> np.ndarray:
        """Make the cache hold exactly `ids`, recomputing only the part that differs from what it holds."""
        ids = list(ids)
        common = 0
        for a, b in zip(self._tokens, ids):
            if a != b:
                break
            common += 1
        common = min(common, len(ids) - 1)  # at least one token is fed, to get its logits
        with self._model._lock:
            self.truncate(common)
            return self.feed(ids[common:])

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._model._release_slot(self._slot)

    def __del__(self) -> None:
        # A generator abandoned without close() must still give its slot back when it is collected.
        if not getattr(self, "_closed", True):
            self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ModelClosedError("this session is closed")
        self._model._check_open()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


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
        if "output" in tensors and config.tie_word_embeddings:  # an explicit head wins over the tie (SPEC §4.1)
            import dataclasses

            config = dataclasses.replace(config, tie_word_embeddings=False)
        self.config = config
        self.quant = quant
        self.tokenizer = tokenizer
        self.source = source
        self._chat_format = chat_format
        self._lock = threading.RLock()
        self._closed = False
        # Slot 0 is the default sequence of generate()/stream()/chat()/logits(): it keeps the last prompt so that
        # the next call reuses the shared prefix. One call at a time borrows it; a call made while it is
        # borrowed (another thread, or a generator still alive) gets a free slot of its own instead.
        self._free_slots = list(range(max_sequences - 1, 0, -1))
        self._default_tokens: list[int] = []
        self._default_busy = False
        self._engine = _core.Engine(_core_config(config), context_length, max_sequences, kv_cache, threads)
        plan = dict(plan) if plan is not None else tensor_plan(config, quant)
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
                if target in ("q8_0", "q4_0") and t.shape[-1] % 32 != 0:
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
    def from_pretrained(cls, path: str | os.PathLike, quant: str = "q4_0", threads: int | None = None,
                        context_length: int | None = None, kv_cache: str = "f16", max_sequences: int = 8,
                        check_tensors: bool = False, progress: bool | None = None) -> "Model":
        """Load a Hugging Face directory, a .gguf file, or a file written by Model.save()."""
        from .hub import resolve_model
        from .loading.open import open_checkpoint

        _check_choice("quant", quant, QUANTS)
        path = resolve_model(path)  # a path, a short name like "smollm2", or a Hugging Face repo id
        ckpt = open_checkpoint(path, check_tensors=check_tensors)
        try:
            return cls(ckpt.config, ckpt.tensors, quant=ckpt.quant or quant, threads=threads,
                       context_length=context_length, kv_cache=kv_cache, max_sequences=max_sequences,
                       tokenizer=ckpt.tokenizer, chat_format=ckpt.chat_format, plan=ckpt.plan,
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
        _check_choice("quant", quant, QUANTS)
        plan = tensor_plan(config, quant)
        tensors = random_tensors(config, plan, seed)
        return cls(config, tensors, quant=quant, threads=threads, context_length=context_length,
                   kv_cache=kv_cache, max_sequences=max_sequences, tokenizer=tokenizer, plan=plan,
                   source=f"random(seed={seed})")

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

    # ------------------------------------------------------------------ low level
    def _check_open(self) -> None:
        if self._closed:
            raise ModelClosedError("the model is closed")

    def _check_ids(self, ids: Any) -> list[int]:
        if isinstance(ids, (str, bytes)):
            raise TypeError("expected a sequence of token ids, got a string")
        arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError("expected a non-empty 1-D sequence of token ids")
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"token ids must be integers, got dtype {arr.dtype}")
        bad = (arr < 0) | (arr >= self.config.n_vocab)
        if bad.any():
            raise ValueError(f"token id {int(arr[bad][0])} is out of range [0, {self.config.n_vocab})")
        return [int(x) for x in arr]

    def _forward(self, tokens: np.ndarray, pos: np.ndarray, seq: np.ndarray, rows: np.ndarray) -> np.ndarray:
        with self._lock:
            self._check_open()
            return self._engine.forward(tokens, pos, seq, rows)

    def _take_slot(self) -> int:
        with self._lock:
            self._check_open()
            if self._free_slots:
                return self._free_slots.pop()
            if not self._default_busy:  # the last slot is the default one: lend it, forgetting what it cached
                self._default_busy = True
                self._default_tokens.clear()
                return 0
            raise RuntimeError("no free sequence slot: close a session or raise max_sequences")

    def _release_slot(self, slot: int) -> None:
        with self._lock:
            if slot == 0:
                self._default_busy = False
            elif slot not in self._free_slots:
                self._free_slots.append(slot)

    def _borrow_session(self) -> Session:
        """The default sequence if no other call holds it, else a fresh slot; close() it when done."""
        with self._lock:
            self._check_open()
            if not self._default_busy:
                self._default_busy = True
                return Session(self, 0, self._default_tokens)
            if not self._free_slots:
                raise RuntimeError("too many generations at once: every sequence slot is in use "
                                   "(finish or close a generator, or raise max_sequences)")
            return Session(self, self._free_slots.pop())

    def session(self) -> Session:
        """A new sequence with its own KV cache slot (close it, or use it as a context manager)."""
        return Session(self, self._take_slot())

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """float32 [len(ids), n_vocab]: the logits at every position of a fresh sequence from position 0."""
        with self._borrow_session() as s:
            s.reset()
            try:
                return s.feed(ids, all_logits=True)
            finally:
                s.reset()

    # ------------------------------------------------------------------ text
    def _require_tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise Error("this model has no tokenizer: pass token ids, or load a checkpoint that carries one")
        return self.tokenizer

    def _prompt_ids(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            ids = self._require_tokenizer().encode(prompt, bos=True)
        else:
            ids = self._check_ids(prompt)
        if not ids:
            raise ValueError("the prompt is empty")
        return ids

    def _stop_ids(self) -> frozenset[int]:
        ids = set(self.config.eos_token_ids)
        if self.tokenizer is not None:
            ids |= set(self.tokenizer.stop_tokens)
        if self._chat_format is not None:
            ids |= set(self._chat_format.stop_tokens)
        return frozenset(i for i in ids if 0 <= i < self.config.n_vocab)

    def generate_tokens(self, prompt: Prompt, session: Session | None = None, **sampling: Any) -> Iterator[int]:
        """Token ids as they are sampled (stop tokens are not yielded)."""
        from .sampling import SamplingParams

        params = SamplingParams(**sampling)
        ids = self._prompt_ids(prompt)
        return self._token_stream(ids, params, session)

    def _token_stream(self, ids: list[int], params: Any, session: Session | None) -> Iterator[int]:
        from .sampling import Sampler

        self._check_open()
        n_ctx = self.context_length
        if len(ids) + params.max_new_tokens > n_ctx:
            raise ContextLengthError(
                f"prompt of {len(ids)} tokens + max_new_tokens={params.max_new_tokens} exceeds the context "
                f"of {n_ctx}", n_prompt=len(ids), max_new_tokens=params.max_new_tokens, n_ctx=n_ctx,
            )
        return self._decode_loop(ids, params, session, Sampler(params, self.config.n_vocab))

    def _decode_loop(self, ids: list[int], params: Any, session: Session | None, sampler: Any) -> Iterator[int]:
        s = session if session is not None else self._borrow_session()
        try:
            stop = self._stop_ids()
            history = list(ids)
            logits = s.feed_reusing_prefix(ids)
            for i in range(params.max_new_tokens):
                tok = sampler.sample(logits, history)
                if tok in stop:
                    return
                yield tok
                history.append(tok)
                if i + 1 < params.max_new_tokens:
                    logits = s.feed([tok])
        finally:
            if session is None:
                s.close()

    def stream(self, prompt: Prompt, **sampling: Any) -> Iterator[str]:
        """Text chunks as they are generated; each is whole UTF-8, and they add up to generate()'s text."""
        from .sampling import SamplingParams

        params = SamplingParams(**sampling)
        ids = self._prompt_ids(prompt)
        tokens = self._token_stream(ids, params, None)
        return self._text_chunks(tokens, params)

    def _text_chunks(self, tokens: Iterator[int], params: Any) -> Iterator[str]:
        from .streaming import TextStream

        ts = TextStream(self._require_tokenizer(), params.stop_strings)
        for tok in tokens:
            piece = ts.push(tok)
            if piece:
                yield piece
            if ts.stopped:
                break
        rest = ts.finish()
        if rest:
            yield rest

    def generate(self, prompt: Prompt, **sampling: Any) -> str:
        """The generated continuation of a prompt (a string, or token ids)."""
        return "".join(self.stream(prompt, **sampling))

    def chat(self, messages: Sequence[Mapping[str, str]], stream: bool = False, date_string: str | None = None,
             **sampling: Any) -> Union[str, Iterator[str]]:
        """Answer a conversation [{"role": ..., "content": ...}, ...] in the model's chat format."""
        from .sampling import SamplingParams

        fmt = self.chat_format
        if fmt is None:
            raise Error("this model's tokenizer has no known chat format")
        params = SamplingParams(**sampling)
        kwargs = {"date_string": date_string} if date_string is not None else {}
        ids = fmt.encode(messages, add_generation_prompt=True, **kwargs)
        chunks = self._text_chunks(self._token_stream(ids, params, None), params)
        return chunks if stream else "".join(chunks)

    def generate_batch(self, prompts: Sequence[Prompt], **sampling: Any) -> list[str]:
        """Generate for several prompts, decoding all sequences in one forward per step."""
        from .batch import generate_batch

        return generate_batch(self, prompts, **sampling)

    # ------------------------------------------------------------------ persistence and lifetime
    def save(self, path: str | os.PathLike) -> None:
        """Write one pre-quantized file; from_pretrained(path) maps it back without requantizing."""
        from .loading.native import save_model

        with self._lock:
            self._check_open()
            save_model(self, path)

    def _engine_tensor(self, name: str) -> tuple[str, np.ndarray]:
        return self._engine.tensor(name)

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
