"""Byte-level BPE tokenizer (tiktoken semantics) for Llama 3 and GPT-2 style vocabularies.

Contract (docs/MODEL.md, "Tokenizer"): ids are BPE ranks (whole-piece lookup first, then lowest-rank merges);
special-token text in user input is plain text unless ``allow_special=True``; special ids are
only ever inserted as integers; ``decode`` is byte-exact (UTF-8 with replacement characters).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import tiktoken

from .errors import InvalidArgumentError, InvalidArgumentTypeError, TokenizerError, UnknownTokenError
from .files import parse_json, read_regular
from .pattern import PROBES, check_pattern

T = TypeVar("T")

__all__ = [
    "END_OF_GENERATION_NAMES",
    "GPT2_PATTERN",
    "LLAMA3_N_BASE",
    "LLAMA3_N_VOCAB",
    "LLAMA3_PATTERN",
    "SMOLLM_PATTERN",
    "Tokenizer",
    "byte_level_from_bytes",
    "bytes_from_byte_level",
    "llama3_special_tokens",
]

# docs/MODEL.md, "Tokenizer": Meta's `Tokenizer.pat_str`, identical to the tokenizer.json Split regex.
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# GPT-2 byte-level pre-tokenizer (HF `ByteLevel(use_regex=True)`).
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# SmolLM / SmolLM2: HF `Digits(individual_digits=True)` then ByteLevel, as one regex. Whitespace
# before a digit is a piece of its own (the digit split ends the segment there).
SMOLLM_PATTERN = (
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
    r"|\s+(?=\p{N})|\s+(?!\S)|\s+"
)

LLAMA3_N_BASE = 128_000
LLAMA3_N_VOCAB = 128_256

# ref: llama-models llama3/tokenizer.py — chunking limits (tiktoken issue #195).
MAX_ENCODE_CHARS = 400_000
MAX_RUN_CHARS = 25_000

MAX_TOKENIZER_MODEL_BYTES = 64 << 20
MAX_TOKENIZER_JSON_BYTES = 256 << 20

_LLAMA3_BOS = "<|begin_of_text|>"
_LLAMA3_EOS = "<|end_of_text|>"
# Names that end generation wherever they exist (llama.cpp's end-of-generation list, abridged).
END_OF_GENERATION_NAMES = (
    "<|end_of_text|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|im_end|>",
    "<|endoftext|>",
)

# Characters for which Python's str.isspace() is true (Meta splits runs by str.isspace).
_ISSPACE_CHARS = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
_WS_CLASS = "".join(f"\\U{ord(c):08x}" for c in _ISSPACE_CHARS)
# A maximal run (anchored by the look-behind, so each run is scanned once) longer than the limit.
_LONG_RUN_RE = re.compile(
    f"(?<![{_WS_CLASS}])[{_WS_CLASS}]{{{MAX_RUN_CHARS + 1},}}|(?<![^{_WS_CLASS}])[^{_WS_CLASS}]{{{MAX_RUN_CHARS + 1},}}"
)


# ---------------------------------------------------------------------------------------------
# GPT-2 byte-level alphabet (docs/MODEL.md, "Tokenizer")


def _byte_level_alphabet() -> list[str]:
    """Code point used for each byte value 0..255 in byte-level BPE vocabularies."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = [""] * 256
    extra = 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


_BYTE_TO_CHAR = _byte_level_alphabet()
_BYTES_TO_LEVEL = str.maketrans({chr(b): c for b, c in enumerate(_BYTE_TO_CHAR)})
# Map every valid byte-level char to the latin-1 char of its byte; invalid chars below U+0144
# go to a code point latin-1 cannot encode, so a stray char fails loudly.
_LEVEL_TO_BYTES = str.maketrans(
    {cp: "\U00010000" for cp in range(0x144)} | {ord(c): chr(b) for b, c in enumerate(_BYTE_TO_CHAR)}
)


def bytes_from_byte_level(s: str) -> bytes:
    """Bytes of a GPT-2 byte-level token string (``"Ġhello"`` -> ``b" hello"``).

    Raises ValueError if ``s`` holds a character outside the byte-level alphabet.
    """
    try:
        return s.translate(_LEVEL_TO_BYTES).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{s!r} is not a byte-level token string (char {exc.start})") from None


def byte_level_from_bytes(b: bytes) -> str:
    """The GPT-2 byte-level string of ``b`` (inverse of bytes_from_byte_level)."""
    return bytes(b).decode("latin-1").translate(_BYTES_TO_LEVEL)


def llama3_special_tokens(n_base: int = LLAMA3_N_BASE, n_vocab: int = LLAMA3_N_VOCAB) -> dict[str, int]:
    """Meta's special-token names (llama-models 0.3.0) for ids n_base .. n_vocab-1 (docs/MODEL.md, "Tokenizer")."""
    names = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>",
        "<|finetune_right_pad_id|>",
        "<|step_id|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eom_id|>",
        "<|eot_id|>",
        "<|python_tag|>",
        "<|image|>",
    ]
    names += [f"<|reserved_special_token_{2 + i}|>" for i in range(256 - len(names))]
    count = max(0, min(len(names), n_vocab - n_base))
    return {names[i]: n_base + i for i in range(count)}


# ---------------------------------------------------------------------------------------------
# Chunking (Meta's encode: 400k-char chunks, then runs of at most 25k same-class chars)


def _split_long_runs(chunk: str) -> Iterator[str]:
    """Cut ``chunk`` so no piece has more than MAX_RUN_CHARS consecutive (non-)space chars."""
    if len(chunk) <= MAX_RUN_CHARS:
        yield chunk
        return
    start = 0
    for match in _LONG_RUN_RE.finditer(chunk):
        run_start, run_end = match.span()
        for cut in range(run_start + MAX_RUN_CHARS, run_end, MAX_RUN_CHARS):
            yield chunk[start:cut]
            start = cut
    yield chunk[start:]


def _pieces(text: str) -> Iterator[str]:
    for i in range(0, len(text), MAX_ENCODE_CHARS):
        yield from _split_long_runs(text[i : i + MAX_ENCODE_CHARS])


# ---------------------------------------------------------------------------------------------
# File readers


def _guarded(what: str, call: Callable[[], T]) -> T:
    """call(), with tiktoken's failures as TokenizerError: a Rust panic (pyo3's PanicException, a BaseException
    that ``except Exception`` misses) or an error from its regex engine. KeyboardInterrupt, SystemExit and
    GeneratorExit pass through untouched."""
    try:
        return call()
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except (ValueError, RuntimeError, OverflowError) as exc:
        raise TokenizerError(f"{what} ({exc})") from exc
    except BaseException as exc:
        if isinstance(exc, Exception) or type(exc).__name__ != "PanicException":
            raise
        raise TokenizerError(f"{what}: tiktoken panicked ({str(exc)[:200]})") from exc


def _read_limited(path: Path, limit: int, what: str) -> bytes:
    return read_regular(str(path), limit, what, TokenizerError)


def _parse_tiktoken_ranks(data: bytes, path: Path) -> dict[bytes, int]:
    """Parse ``<base64> <rank>`` lines; every malformed line is a ModelLoadError."""
    ranks: dict[bytes, int] = {}
    seen_ranks: set[int] = set()
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise TokenizerError(f"tokenizer file {path}: not ASCII (byte {exc.start})") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise TokenizerError(f"tokenizer file {path}, line {lineno}: expected '<base64> <rank>', got {line[:80]!r}")
        token_b64, rank_text = parts
        try:
            token = base64.b64decode(token_b64, validate=True)
        except (binascii.Error, ValueError):
            raise TokenizerError(f"tokenizer file {path}, line {lineno}: bad base64 {token_b64[:80]!r}") from None
        if not rank_text.isdigit() or len(rank_text) > 9:
            raise TokenizerError(f"tokenizer file {path}, line {lineno}: bad rank {rank_text[:80]!r}")
        rank = int(rank_text)
        if not token:
            raise TokenizerError(f"tokenizer file {path}, line {lineno}: empty token")
        if token in ranks:
            raise TokenizerError(f"tokenizer file {path}, line {lineno}: duplicate token {token!r}")
        if rank in seen_ranks:
            raise TokenizerError(f"tokenizer file {path}, line {lineno}: duplicate rank {rank}")
        ranks[token] = rank
        seen_ranks.add(rank)
    if not ranks:
        raise TokenizerError(f"tokenizer file {path}: no tokens")
    return ranks


def _json_special_name(value: Any) -> str | None:
    """A bos/eos entry of tokenizer_config.json: a string, {"content": str} or null."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _pattern_from_pre_tokenizer(pre: Any, path: Path) -> str:
    """The single regex equivalent to a tokenizer.json pre_tokenizer (the supported kinds)."""
    if not isinstance(pre, Mapping):
        raise TokenizerError(f"tokenizer file {path}: pre_tokenizer missing or not an object")
    kind = pre.get("type")
    if kind == "Sequence":
        steps = pre.get("pretokenizers")
        if not isinstance(steps, list) or not all(isinstance(s, Mapping) for s in steps):
            raise TokenizerError(f"tokenizer file {path}: pre_tokenizer.pretokenizers is not a list")
        kinds = [s.get("type") for s in steps]
        if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
            return _pattern_from_pre_tokenizer(steps[0], path)
        if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
            _check_no_prefix_space(steps[1], path)
            return SMOLLM_PATTERN
        if len(steps) == 1:
            return _pattern_from_pre_tokenizer(steps[0], path)
        raise TokenizerError(f"tokenizer file {path}: unsupported pre_tokenizer sequence {kinds}")
    if kind == "Split":
        pattern = pre.get("pattern")
        regex = pattern.get("Regex") if isinstance(pattern, Mapping) else None
        if not isinstance(regex, str) or pre.get("invert", False):
            raise TokenizerError(f"tokenizer file {path}: unsupported Split pre_tokenizer")
        return regex
    if kind == "ByteLevel" and pre.get("use_regex", True):
        _check_no_prefix_space(pre, path)
        return GPT2_PATTERN
    raise TokenizerError(f"tokenizer file {path}: unsupported pre_tokenizer type {kind!r}")


def _check_no_prefix_space(step: Mapping[str, Any], path: Path) -> None:
    if step.get("add_prefix_space", False):
        raise TokenizerError(f"tokenizer file {path}: ByteLevel add_prefix_space=true is not supported")


def _read_tokenizer_config(path: Path) -> dict[str, Any]:
    """tokenizer_config.json next to tokenizer.json, or {} (it is optional)."""
    cfg_path = path.with_name("tokenizer_config.json")
    if not cfg_path.is_file():
        return {}
    raw = _read_limited(cfg_path, MAX_TOKENIZER_JSON_BYTES, "tokenizer config")
    cfg = parse_json(raw, f"tokenizer config {cfg_path}", TokenizerError)
    return cfg if isinstance(cfg, dict) else {}


# ---------------------------------------------------------------------------------------------


class Tokenizer:
    """A tiktoken ``Encoding`` plus the facts a model needs: specials, BOS/EOS, stop tokens.

    Build it with one of the ``from_*`` constructors. Ids in ``[0, n_vocab)`` that are neither a
    base token nor a special token (holes) decode to no bytes.
    """

    def __init__(
        self,
        mergeable_ranks: dict[bytes, int],
        special_tokens: Mapping[str, int],
        pattern: str,
        n_vocab: int,
        bos_id: int | None,
        eos_id: int | None,
        stop_ids: Iterable[int],
        add_bos: bool = True,
        name: str = "llama32_native",
        aliases: Mapping[int, bytes] | None = None,
    ) -> None:
        """Low-level constructor; prefer the ``from_*`` class methods (they validate inputs).

        ``aliases`` are ids whose bytes duplicate a base token's (decode-only ids).
        """
        self._n_vocab = int(n_vocab)
        self._special_ids = dict(special_tokens)
        self._special_id_set = frozenset(self._special_ids.values())
        table: list[bytes] = [b""] * self._n_vocab
        for token, rank in mergeable_ranks.items():
            if rank < self._n_vocab:  # ranks past the vocabulary: bytes it has no token for (see _build)
                table[rank] = token
        self._has_unseen_bytes = max(mergeable_ranks.values()) >= self._n_vocab
        for tid, token in (aliases or {}).items():
            table[tid] = token
        for text, tid in self._special_ids.items():
            table[tid] = text.encode("utf-8")
        self._id_to_bytes = table
        # bytes per id, with the single bytes placed past the vocabulary (see _build) at the end
        self._id_lens = np.array([len(b) for b in table] + [1] * 256, dtype=np.int64)
        self._bos_id = bos_id
        self._eos_id = eos_id
        self._stop_tokens = frozenset(int(i) for i in stop_ids)
        self.add_bos = bool(add_bos)
        self._pattern = pattern
        self._enc = _guarded(
            f"tokenizer {name}: cannot build the encoder",
            lambda: tiktoken.Encoding(
                name=name, pat_str=pattern, mergeable_ranks=mergeable_ranks, special_tokens=self._special_ids
            ),
        )
        self._all_special = frozenset(self._special_ids)

    # -- constructors -----------------------------------------------------------------------

    @classmethod
    def from_tiktoken_file(
        cls,
        path: str | os.PathLike[str],
        n_vocab: int = LLAMA3_N_VOCAB,
        special_tokens: Mapping[str, int] | None = None,
    ) -> Tokenizer:
        """Meta ``tokenizer.model`` (base64 + rank lines); specials default to Meta's list (§5.4)."""
        path = Path(path)
        ranks = _parse_tiktoken_ranks(_read_limited(path, MAX_TOKENIZER_MODEL_BYTES, "tokenizer file"), path)
        n_base = max(ranks.values()) + 1
        if isinstance(n_vocab, bool) or not isinstance(n_vocab, int) or n_vocab < n_base:
            raise TokenizerError(f"tokenizer file {path}: n_vocab={n_vocab!r} is below the {n_base} base tokens")
        if special_tokens is None:
            special_tokens = llama3_special_tokens(n_base, n_vocab)
        return cls._build(ranks, dict(special_tokens), LLAMA3_PATTERN, n_vocab, None, None, None, True, str(path))

    @classmethod
    def from_tokenizer_json(cls, path: str | os.PathLike[str], n_vocab: int | None = None) -> Tokenizer:
        """Hugging Face ``tokenizer.json`` (byte-level BPE); tiktoken semantics, merges ignored."""
        path = Path(path)
        raw = _read_limited(path, MAX_TOKENIZER_JSON_BYTES, "tokenizer file")
        doc = parse_json(raw, f"tokenizer file {path}", TokenizerError)
        if not isinstance(doc, dict):
            raise TokenizerError(f"tokenizer file {path}: top level is not an object")
        model = doc.get("model")
        if not isinstance(model, Mapping) or model.get("type", "BPE") != "BPE":
            raise TokenizerError(f"tokenizer file {path}: model.type must be 'BPE'")
        vocab = model.get("vocab")
        if not isinstance(vocab, Mapping) or not vocab:
            raise TokenizerError(f"tokenizer file {path}: model.vocab missing or empty")
        if doc.get("normalizer") is not None:
            raise TokenizerError(f"tokenizer file {path}: a normalizer is not supported")
        pattern = _pattern_from_pre_tokenizer(doc.get("pre_tokenizer"), path)
        specials = cls._json_added_tokens(doc.get("added_tokens"), path, n_vocab)
        ranks = cls._json_ranks(vocab, set(specials.values()), path, n_vocab)
        if n_vocab is None:
            n_vocab = max(list(ranks.values()) + list(specials.values())) + 1
        cfg = _read_tokenizer_config(path)
        bos_name = _json_special_name(cfg.get("bos_token"))
        eos_name = _json_special_name(cfg.get("eos_token"))
        add_bos = cfg.get("add_bos_token")
        if add_bos is None:
            add_bos = cls._post_processor_adds_bos(doc.get("post_processor"))
        bos_id = specials.get(bos_name) if bos_name else None
        eos_id = specials.get(eos_name) if eos_name else None
        return cls._build(ranks, specials, pattern, n_vocab, bos_id, eos_id, None, bool(add_bos), str(path))

    @classmethod
    def from_dir(cls, path: str | os.PathLike[str], n_vocab: int | None = None) -> Tokenizer | None:
        """Tokenizer of a model directory, or None if it has none.

        ``tokenizer.json`` wins when present (its added_tokens carry the special names;
        docs/MODEL.md, "Tokenizer"); else ``tokenizer.model`` or ``original/tokenizer.model`` with Meta's names.
        """
        root = Path(path)
        if (root / "tokenizer.json").is_file():
            return cls.from_tokenizer_json(root / "tokenizer.json", n_vocab)
        for candidate in (root / "tokenizer.model", root / "original" / "tokenizer.model"):
            if candidate.is_file():
                return cls.from_tiktoken_file(candidate, LLAMA3_N_VOCAB if n_vocab is None else n_vocab)
        return None

    @classmethod
    def from_vocab(
        cls,
        token_bytes: Sequence[bytes | None],
        special_tokens: Mapping[str, int],
        pattern: str,
        bos_id: int | None,
        eos_id: int | None,
        stop_ids: Iterable[int] | None = None,
        *,
        n_vocab: int | None = None,
        add_bos: bool = True,
        name: str = "vocab",
    ) -> Tokenizer:
        """General constructor (the GGUF loader's): ``token_bytes[i]`` is the bytes of id ``i``.

        Entries at special ids are ignored (the special's name is its text); ``None`` marks a
        hole. Ranks are the ids. ``stop_ids=None`` means eos plus the known end-of-generation
        names present (``<|eot_id|>``, ``<|eom_id|>``, ``<|im_end|>``, ...).
        """
        special_tokens = dict(special_tokens)
        special_id_set = set(special_tokens.values())
        ranks: dict[bytes, int] = {}
        aliases: dict[int, bytes] = {}
        for tid, token in enumerate(token_bytes):
            if token is None or tid in special_id_set:
                continue
            if not isinstance(token, (bytes, bytearray)) or not token:
                raise TokenizerError(f"tokenizer {name}: token {tid} is not a non-empty byte string")
            token = bytes(token)
            if token in ranks:  # a duplicate: the lowest id encodes, the others only decode
                aliases[tid] = token
            else:
                ranks[token] = tid
        if not ranks:
            raise TokenizerError(f"tokenizer {name}: no base tokens")
        if n_vocab is None:
            n_vocab = max([len(token_bytes)] + [i + 1 for i in special_id_set])
        return cls._build(ranks, special_tokens, pattern, n_vocab, bos_id, eos_id, stop_ids, add_bos, name, aliases)

    @classmethod
    def _build(
        cls,
        ranks: dict[bytes, int],
        specials: dict[str, int],
        pattern: str,
        n_vocab: int,
        bos_id: int | None,
        eos_id: int | None,
        stop_ids: Iterable[int] | None,
        add_bos: bool,
        name: str,
        aliases: Mapping[int, bytes] | None = None,
    ) -> Tokenizer:
        """Validate the pieces, fill in Llama 3 conventions, construct, and try the encoder once."""
        if isinstance(n_vocab, bool) or not isinstance(n_vocab, int) or not 0 < n_vocab <= 1 << 24:
            raise TokenizerError(f"tokenizer {name}: n_vocab={n_vocab!r} out of range")
        check_pattern(pattern, f"tokenizer {name}")
        if not ranks:
            raise TokenizerError(f"tokenizer {name}: no base tokens")
        if len(set(ranks.values())) != len(ranks):
            seen: dict[int, bytes] = {}
            for token, rank in ranks.items():
                if rank in seen:
                    raise TokenizerError(f"tokenizer {name}: id {rank} is given to two tokens, "
                                         f"{seen[rank][:40]!r} and {token[:40]!r}")
                seen[rank] = token
        if max(ranks.values()) >= n_vocab:
            raise TokenizerError(f"tokenizer {name}: base token id {max(ranks.values())} >= n_vocab {n_vocab}")
        # tiktoken needs every single byte. Vocabularies that lack some (SmolLM2 has no token for a few
        # control bytes) get them at ids past the vocabulary; encode() drops those, as the model cannot see them.
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        rank_ids = set(ranks.values())
        if missing:
            ranks = dict(ranks)
            for k, b in enumerate(missing):
                ranks[bytes([b])] = n_vocab + k
        for text, tid in specials.items():
            if not isinstance(text, str) or not text:
                raise TokenizerError(f"tokenizer {name}: special token {tid} has an empty or non-string name")
            if isinstance(tid, bool) or not isinstance(tid, int) or not 0 <= tid < n_vocab or tid in rank_ids:
                raise TokenizerError(f"tokenizer {name}: special token {text!r} has a bad id {tid!r}")
        if len(set(specials.values())) != len(specials):
            raise TokenizerError(f"tokenizer {name}: two special tokens share an id")
        if _LLAMA3_BOS in specials:  # Llama 3 conventions (Meta Tokenizer): fixed BOS/EOS
            bos_id = specials[_LLAMA3_BOS]
            eos_id = specials.get(_LLAMA3_EOS, eos_id)
            add_bos = True
        for label, tid in (("bos", bos_id), ("eos", eos_id)):
            if tid is not None and not 0 <= tid < n_vocab:
                raise TokenizerError(f"tokenizer {name}: {label} id {tid} out of range [0, {n_vocab})")
        if stop_ids is None:
            stop = {specials[n] for n in END_OF_GENERATION_NAMES if n in specials}
            if eos_id is not None:
                stop.add(eos_id)
        else:
            stop = {int(i) for i in stop_ids}
            if any(not 0 <= i < n_vocab for i in stop):
                raise TokenizerError(f"tokenizer {name}: stop id out of range [0, {n_vocab})")
        aliases = {i: b for i, b in (aliases or {}).items() if i < n_vocab and i not in specials.values()}
        use_bos = add_bos and bos_id is not None
        tok = cls(ranks, specials, pattern, n_vocab, bos_id, eos_id, stop, use_bos, name, aliases)
        for probe in PROBES:  # an encoder that fails on ordinary text fails here, at load time
            tok.encode(probe, bos=False, allow_special=True)
        return tok

    @staticmethod
    def _json_added_tokens(added: Any, path: Path, n_vocab: int | None) -> dict[str, int]:
        if added is None:
            return {}
        if not isinstance(added, list):
            raise TokenizerError(f"tokenizer file {path}: added_tokens is not a list")
        specials: dict[str, int] = {}
        for i, entry in enumerate(added):
            if not isinstance(entry, Mapping):
                raise TokenizerError(f"tokenizer file {path}: added_tokens[{i}] is not an object")
            tid, content = entry.get("id"), entry.get("content")
            if isinstance(tid, bool) or not isinstance(tid, int) or tid < 0 or not isinstance(content, str):
                raise TokenizerError(f"tokenizer file {path}: added_tokens[{i}] needs an int id and str content")
            if n_vocab is not None and tid >= n_vocab:
                continue  # e.g. the vision tokenizer's <|image|> = 128256 (docs/MODEL.md, "Tokenizer")
            specials.setdefault(content, tid)
        return specials

    @staticmethod
    def _json_ranks(
        vocab: Mapping[Any, Any], special_ids: set[int], path: Path, n_vocab: int | None
    ) -> dict[bytes, int]:
        ranks: dict[bytes, int] = {}
        for key, tid in vocab.items():
            if isinstance(tid, bool) or not isinstance(tid, int) or tid < 0:
                raise TokenizerError(f"tokenizer file {path}: vocab entry {str(key)[:40]!r} has a bad id {tid!r}")
            if tid in special_ids or (n_vocab is not None and tid >= n_vocab):
                continue
            try:
                token = bytes_from_byte_level(key)
            except ValueError:
                raise TokenizerError(
                    f"tokenizer file {path}: vocab entry {str(key)[:40]!r} is not a byte-level string"
                ) from None
            if not token:
                raise TokenizerError(f"tokenizer file {path}: vocab entry {tid} is empty")
            if ranks.setdefault(token, tid) != tid and tid < ranks[token]:
                ranks[token] = tid  # duplicate bytes: the lowest id encodes
        if not ranks:
            raise TokenizerError(f"tokenizer file {path}: no base tokens")
        return ranks

    @staticmethod
    def _post_processor_adds_bos(post: Any) -> bool:
        """True when a TemplateProcessing post-processor starts with a special token."""
        if not isinstance(post, Mapping):
            return False
        if post.get("type") == "Sequence" and isinstance(post.get("processors"), list):
            return any(Tokenizer._post_processor_adds_bos(p) for p in post["processors"])
        single = post.get("single") if post.get("type") == "TemplateProcessing" else None
        return bool(single) and isinstance(single[0], Mapping) and "SpecialToken" in single[0]

    # -- properties -------------------------------------------------------------------------

    @property
    def n_vocab(self) -> int:
        """Number of ids (base + special + holes); valid ids are ``[0, n_vocab)``."""
        return self._n_vocab

    @property
    def bos_id(self) -> int | None:
        return self._bos_id

    @property
    def eos_id(self) -> int | None:
        return self._eos_id

    @property
    def stop_tokens(self) -> frozenset[int]:
        """Ids that end generation (Llama 3: 128001, 128008, 128009)."""
        return self._stop_tokens

    @property
    def special_ids(self) -> dict[str, int]:
        """Special-token name -> id (a copy)."""
        return dict(self._special_ids)

    @property
    def pattern(self) -> str:
        return self._pattern

    def special(self, name: str) -> int:
        """Id of a special token by name, e.g. ``special("<|eot_id|>")``; UnknownTokenError (a KeyError) if absent."""
        try:
            return self._special_ids[name]
        except KeyError:
            raise UnknownTokenError(f"no special token named {name!r}") from None

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_id_set

    def __repr__(self) -> str:
        return f"Tokenizer(name={self._enc.name!r}, n_vocab={self._n_vocab}, n_special={len(self._special_ids)})"

    # -- encode / decode --------------------------------------------------------------------

    def encode(self, text: str, bos: bool = True, eos: bool = False, allow_special: bool = False) -> list[int]:
        """Token ids of ``text``.

        ``bos=True`` prepends BOS when this tokenizer's model uses one (``add_bos``; True for
        Llama 3, False e.g. for SmolLM2 GGUF files); ``eos=True`` appends EOS. Special-token
        text is plain text unless ``allow_special``. Raises TypeError for a non-str and
        ValueError for text that is not valid Unicode (a lone surrogate such as ``"\\ud800"``).
        """
        if not isinstance(text, str):
            raise InvalidArgumentTypeError(f"text must be str, not {type(text).__name__}")
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidArgumentError(
                    f"text contains a lone surrogate {text[exc.start]!r} at index {exc.start}; "
                    "it cannot be encoded as UTF-8"
                ) from None
        ids: list[int] = []
        if bos and self.add_bos and self._bos_id is not None:
            ids.append(self._bos_id)
        enc, specials = self._enc, self._all_special
        body: list[int] = []
        for piece in _pieces(text):
            if allow_special:
                body += _guarded(f"{self}: encode failed",
                                 lambda p=piece: enc.encode(p, allowed_special=specials, disallowed_special=()))
            else:
                body += _guarded(f"{self}: encode failed", lambda p=piece: enc.encode_ordinary(p))
        # tiktoken encodes only what the pre-tokenizer pattern matches: a pattern from a file that misses some
        # text would drop it silently. The tokens must account for every byte.
        lens = self._id_lens[np.fromiter(body, dtype=np.int64, count=len(body))]
        if int(lens.sum()) != len(text.encode("utf-8")):
            raise TokenizerError(f"{self}: its pre-tokenizer pattern does not cover this text (part of it would be "
                                 "dropped); the tokenizer data is unusable")
        if self._has_unseen_bytes:
            body = [i for i in body if i < self._n_vocab]
        ids += body
        if eos and self._eos_id is not None:
            ids.append(self._eos_id)
        return ids

    def decode_bytes(self, ids: Iterable[int], skip_special: bool = False) -> bytes:
        """Concatenated bytes of ``ids`` (special ids give their literal text unless skipped).

        Raises ValueError for an id outside ``[0, n_vocab)`` and TypeError for a non-integer.
        """
        table = self._id_to_bytes
        try:
            ids = list(ids)
            if ids and (min(ids) < 0 or max(ids) >= self._n_vocab):
                bad = next(i for i in ids if not 0 <= i < self._n_vocab)
                raise InvalidArgumentError(f"token id {bad} out of range [0, {self._n_vocab})")
            if skip_special:
                special = self._special_id_set
                return b"".join([table[i] for i in ids if i not in special])
            return b"".join([table[i] for i in ids])
        except TypeError:
            raise InvalidArgumentTypeError("token ids must be integers") from None

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Text of ``ids``: UTF-8 with U+FFFD for invalid or incomplete sequences."""
        return self.decode_bytes(ids, skip_special).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        """Bytes of one id (special ids: their name as UTF-8)."""
        if isinstance(token_id, bool) or not hasattr(token_id, "__index__"):
            raise InvalidArgumentTypeError(f"token id must be an int, not {type(token_id).__name__}")
        token_id = token_id.__index__()
        if not 0 <= token_id < self._n_vocab:
            raise InvalidArgumentError(f"token id {token_id} out of range [0, {self._n_vocab})")
        return self._id_to_bytes[token_id]
