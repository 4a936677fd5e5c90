"""Constrained decoding with llguidance: JSON schema, JSON mode, regular expressions and Lark grammars.

Contract: a grammar is compiled and validated against the model's tokenizer when its processor is built, so a
bad schema or grammar is a GrammarError naming the problem before any compute. GrammarProcessor masks every
token the grammar forbids to -inf (the model's stop tokens are allowed once the grammar accepts), hands the
tokens the grammar fixes to the generation core as forced tokens (llguidance fast-forward), follows the
sequence through accept/rollback (speculative drafts), and is finished once nothing can follow.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import Error, GenerationError, GrammarError, InvalidArgumentError, InvalidArgumentTypeError
from .processors import LogitsProcessor

__all__ = [
    "GrammarProcessor",
    "compile_grammar",
    "grammar_from_response_format",
    "ll_tokenizer",
    "grammar_option",
    "warm_grammar_tokenizers",
]

# JSON is written the way chat models write it: one space after ',' and ':', no other whitespace. Flexible
# whitespace lets a small model emit newlines forever instead of closing the object.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
MAX_GRAMMAR_CHARS = 1 << 20
_NEG_INF_BITS = np.float32(-np.inf).view(np.int32)
_FEW_WORDS = 64  # masks with at most this many non-zero 32-token words take the gather/fill path
_BIT_INDEX = np.arange(32)

_cache_lock = threading.Lock()
_ll_cache: weakref.WeakKeyDictionary[Any, dict[tuple[int, ...], Any]] = weakref.WeakKeyDictionary()


def load_llguidance() -> Any:
    try:
        import llguidance
    except ImportError:  # pragma: no cover - it is a dependency; this names the fix if it was removed
        raise Error("constrained decoding needs the llguidance package: pip install llguidance") from None
    return llguidance


class _TokenizerView:
    """What llguidance.TokenizerWrapper reads from a tokenizer: every token's bytes (special tokens marked with a
    leading 0xff, llguidance's convention), the special ids, eos/bos, and an encoder of bytes."""

    def __init__(self, tokenizer: Any, eos_id: int) -> None:
        special = set(tokenizer.special_ids.values())
        self.tokens = [b"\xff" + tokenizer.token_bytes(i) if i in special else tokenizer.token_bytes(i)
                       for i in range(tokenizer.n_vocab)]
        self.special_token_ids = sorted(special)
        self.eos_token_id = eos_id
        self.bos_token_id = tokenizer.bos_id
        self._tokenizer = tokenizer

    def __call__(self, data: bytes) -> list[int]:
        return self._tokenizer.encode(data.decode("utf-8", errors="replace"), bos=False)


def ll_tokenizer(tokenizer: Any, stop_ids: Iterable[int]) -> Any:
    """The llguidance.LLTokenizer of a Tokenizer whose end-of-sequence tokens are `stop_ids` (built once, ~1-2 s
    for a 128k vocabulary, then cached per tokenizer and stop set)."""
    stops = tuple(sorted(int(i) for i in stop_ids if 0 <= int(i) < tokenizer.n_vocab))
    if not stops:
        raise InvalidArgumentError("constrained decoding needs at least one stop token in the vocabulary")
    with _cache_lock:
        per_tok = _ll_cache.setdefault(tokenizer, {})
        if stops not in per_tok:
            llg = load_llguidance()
            per_tok[stops] = llg.LLTokenizer(llg.TokenizerWrapper(_TokenizerView(tokenizer, stops[0])),
                                             eos_token=list(stops))
        return per_tok[stops]


def warm_grammar_tokenizers(model: Any) -> None:
    """Build (and cache) the LLTokenizers that model's constrained generations will use, chat and not."""
    if getattr(model, "tokenizer", None) is not None:
        for chat in (False, True):
            ll_tokenizer(model.tokenizer, model.stop_ids(chat=chat))


# ---------------------------------------------------------------------------------------------------------------
# Grammar sources


def _schema_text(schema: Any, name: str) -> str:
    if isinstance(schema, bool):
        schema = {} if schema else {"not": {}}
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as e:
            raise GrammarError(f"{name} is not valid JSON: {e}") from None
    if not isinstance(schema, Mapping):
        raise InvalidArgumentTypeError(f"{name} must be a JSON schema object, not {type(schema).__name__}")
    try:
        return json.dumps(schema)
    except (TypeError, ValueError) as e:
        raise GrammarError(f"{name} cannot be written as JSON: {e}") from None


def json_schema_grammar(schema: Any, name: str = "json_schema") -> str:
    """llguidance grammar text for a JSON schema (the subset llguidance supports; checked by compile_grammar)."""
    return load_llguidance().LLMatcher.grammar_from_json_schema(_schema_text(schema, name), overrides=JSON_OPTIONS)


def lark_json_rule(schema: Any, name: str = "parameters") -> str:
    """A Lark right-hand side matching JSON valid under `schema` (llguidance's %json extension)."""
    spec = dict(json.loads(_schema_text(schema, name)))
    guidance = dict(spec.get("x-guidance") or {})
    spec["x-guidance"] = {**guidance, **JSON_OPTIONS}
    return "%json " + json.dumps(spec)


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgumentTypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value:
        raise GrammarError(f"{name} is empty")
    if len(value) > MAX_GRAMMAR_CHARS:
        raise GrammarError(f"{name} has {len(value)} characters, at most {MAX_GRAMMAR_CHARS} allowed")
    return value


def grammar_from_response_format(response_format: Any) -> str | None:
    """llguidance grammar text for an OpenAI `response_format` (None: unconstrained).

    {"type": "text"}: no constraint. {"type": "json_object"}: any JSON object. {"type": "json_schema",
    "json_schema": {"name": ..., "schema": {...}, "strict": ...}}: JSON valid under the schema. Extensions:
    {"type": "regex", "regex": "..."} and {"type": "grammar", "grammar": "<Lark grammar>"} ("lark" is an alias).
    """
    if response_format is None:
        return None
    if not isinstance(response_format, Mapping):
        raise InvalidArgumentTypeError(f"response_format must be a dict, not {type(response_format).__name__}")
    kind = response_format.get("type")
    llg = load_llguidance()
    if kind == "text":
        return None
    if kind == "json_object":
        return json_schema_grammar({"type": "object"}, "response_format")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping):
            raise InvalidArgumentError("response_format.json_schema must be an object with a 'schema'")
        schema = spec.get("schema", {"type": "object"})
        return json_schema_grammar(schema, "response_format.json_schema.schema")
    if kind == "regex":
        return llg.LLMatcher.grammar_from_regex(_text(response_format.get("regex"), "response_format.regex"))
    if kind in ("grammar", "lark"):
        source = response_format.get("grammar", response_format.get("lark"))
        return llg.LLMatcher.grammar_from_lark(_text(source, "response_format.grammar"))
    raise InvalidArgumentError(
        f"response_format.type {kind!r} is not supported; use text, json_object, json_schema, regex or grammar")


def compile_grammar(grammar: str, lltok: Any, name: str = "grammar") -> str:
    """Validate llguidance grammar text against a tokenizer; GrammarError "<name>: <llguidance's message>"."""
    llg = load_llguidance()
    message = llg.LLMatcher.validate_grammar(grammar, lltok)
    if message and not message.startswith("WARNING"):
        raise GrammarError(f"{name}: {message.strip()}")
    return grammar


# ---------------------------------------------------------------------------------------------------------------
# The processor


class GrammarProcessor(LogitsProcessor):
    """Masks the logits of one sequence to what an llguidance grammar allows next.

    A fresh processor per generation (it holds the parse state). Tokens are the model's ids; logits longer than
    the tokenizer's vocabulary (padded output layers) have the extra ids masked.
    """

    def __init__(self, lltok: Any, grammar: str, n_vocab: int) -> None:
        llg = load_llguidance()
        self.matcher = llg.LLMatcher(lltok, grammar, log_level=0)
        if self.matcher.is_error():
            raise GrammarError(self.matcher.get_error().strip())
        self.n_vocab = int(n_vocab)
        self._n_tok = int(lltok.vocab_size)
        words = (max(self._n_tok, self.n_vocab) + 31) // 32
        self._bitmask = np.zeros(words, dtype=np.int32)
        self._select = np.empty(words * 32, dtype=np.int32)
        self._tmp = np.empty(words * 32, dtype=np.int32)
        self._n_accepted = 0

    def allowed(self) -> np.ndarray:
        """Bool [n_vocab]: the tokens the grammar allows next."""
        self._fill()
        bits = np.unpackbits(self._bitmask.view(np.uint8), count=self.n_vocab, bitorder="little")
        if self.n_vocab > self._n_tok:
            bits[self._n_tok:] = 0
        return bits.astype(bool)

    def _fill(self) -> None:
        self._bitmask[:] = 0
        self.matcher.unsafe_compute_mask_ptr(self._bitmask.ctypes.data, min(self._bitmask.nbytes,
                                                                            4 * ((self._n_tok + 31) // 32)))
        if self.matcher.is_error():
            raise GenerationError(f"grammar: {self.matcher.get_error().strip()}")

    def __call__(self, logits: np.ndarray, generated: Sequence[int]) -> np.ndarray:
        if logits.dtype != np.float32 or not logits.flags.c_contiguous:
            logits = np.ascontiguousarray(logits, dtype=np.float32)
        self._fill()
        n = logits.shape[0]
        words = np.flatnonzero(self._bitmask)
        if words.size <= _FEW_WORDS:  # a structural position: a few allowed tokens, keep them and fill the rest
            bits = np.unpackbits(self._bitmask[words].view(np.uint8), bitorder="little").reshape(words.size, 32)
            ids = (words[:, None] * 32 + _BIT_INDEX)[bits.view(bool)]
            ids = ids[ids < min(n, self._n_tok)]
            kept = logits[ids]
            logits.fill(-np.inf)
            logits[ids] = kept
            return logits
        bits = np.unpackbits(self._bitmask.view(np.uint8), count=n, bitorder="little")
        if n - np.count_nonzero(bits) <= n // 8:  # inside a string: most tokens allowed, scatter -inf on the rest
            logits[np.flatnonzero(bits == 0)] = -np.inf
            if n > self._n_tok:
                logits[self._n_tok:] = -np.inf
            return logits
        # Branch-free select on the float bits: x ^ ((x ^ -inf) & m), m = -1 where masked and 0 where allowed.
        sel = self._select[:n]
        np.subtract(bits, 1, out=sel, dtype=np.int32, casting="unsafe")
        x = logits.view(np.int32)
        tmp = self._tmp[:n]
        np.bitwise_xor(x, _NEG_INF_BITS, out=tmp)
        np.bitwise_and(tmp, sel, out=tmp)
        np.bitwise_xor(x, tmp, out=x)
        if n > self._n_tok:
            logits[self._n_tok:] = -np.inf
        return logits

    def accept(self, token: int) -> None:
        if self.matcher.is_stopped():
            return  # a stop token after the grammar ended: nothing to follow
        if not self.matcher.consume_token(int(token)):
            raise GenerationError(f"grammar: token {token} is not allowed here ({self.matcher.get_error().strip()})")
        self._n_accepted += 1

    def rollback(self, n: int) -> None:
        n = min(int(n), self._n_accepted)
        if n > 0:
            if not self.matcher.rollback(n):
                raise GenerationError(f"grammar: cannot roll back {n} tokens ({self.matcher.get_error().strip()})")
            self._n_accepted -= n

    def forced(self) -> list[int]:
        if self.matcher.is_stopped():
            return []
        return [int(t) for t in self.matcher.compute_ff_tokens()]

    def finished(self) -> bool:
        return bool(self.matcher.is_stopped())


def grammar_processor(model: Any, grammar: str, stop_ids: Iterable[int], name: str = "grammar") -> GrammarProcessor:
    """A GrammarProcessor for `model` (its tokenizer) that ends on `stop_ids`, grammar validated first (errors name
    the option `name`)."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise InvalidArgumentError("constrained decoding needs a model with a tokenizer")
    lltok = ll_tokenizer(tokenizer, stop_ids)
    return GrammarProcessor(lltok, compile_grammar(grammar, lltok, name), model.config.n_vocab)


def grammar_option(response_format: Any, json_schema: Any, regex: Any, grammar: Any) -> tuple[str | None, str]:
    """(llguidance grammar text of the one constraint option given or None, the option's name)."""
    given = [n for n, v in (("response_format", response_format), ("json_schema", json_schema), ("regex", regex),
                            ("grammar", grammar)) if v is not None]
    if len(given) > 1:
        raise InvalidArgumentError(f"give one of response_format, json_schema, regex, grammar; got {', '.join(given)}")
    if json_schema is not None:
        return json_schema_grammar(json_schema), "json_schema"
    if regex is not None:
        return load_llguidance().LLMatcher.grammar_from_regex(_text(regex, "regex")), "regex"
    if grammar is not None:
        return load_llguidance().LLMatcher.grammar_from_lark(_text(grammar, "grammar")), "grammar"
    return grammar_from_response_format(response_format), "response_format"
