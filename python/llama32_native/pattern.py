"""Checks on a pre-tokenizer regex from a file, made before tiktoken compiles it (docs/ERRORS.md).

Contract: `check_pattern` raises TokenizerError for a pattern that is not a non-empty string of bounded length,
does not compile, can match the empty string (tiktoken panics on an empty match), skips part of ordinary text
(tiktoken encodes only what the pattern matches: the rest would be silently dropped), uses a back-reference, or puts
an unbounded quantifier inside a repeated group (`(a+)+`, `(\\w+\\s?)*`: catastrophic backtracking, which makes
tiktoken drop text or panic). The check is conservative: it refuses some patterns that would be safe, never the
built-in ones.
"""

from __future__ import annotations

import regex  # tiktoken's own dependency; it knows \p{L} like tiktoken's engine

from .errors import TokenizerError

MAX_PATTERN_CHARS = 4096
# Texts whose every position a sane pre-tokenizer pattern must consume with non-empty matches.
PROBES = (
    "Hello, world! It's 2024-06-01: 12345 x\t\ty\r\n\n  z   ",
    "'s 're 've 'll 'd 'm 't SHOUT éàçñü ß 日本語 👍🏽 \u0645\u0631\u062d\u0628\u0627 e\u0301",
    "\x00\x01\x1f\x7f ^^^ ... --- ___ \\\\ // () [] {} <|eot_id|> a\u2028b\u3000c",
    "1 a 2 B , ; 7\n8\tx y.z!?\n\n",  # lone characters of every class
)


def _close(pattern: str, i: int, ch: str) -> int:
    """Index just past the `ch` closing a character class or brace that starts at i (skipping escapes)."""
    j = i + 1
    if ch == "]":
        if j < len(pattern) and pattern[j] == "^":
            j += 1
        if j < len(pattern) and pattern[j] == "]":  # a literal ] first in a class
            j += 1
    while j < len(pattern):
        c = pattern[j]
        if c == "\\":
            j += 2
            continue
        if ch == "]" and c == "[":  # nested class (set operations)
            j = _close(pattern, j, "]")
            continue
        if c == ch:
            return j + 1
        j += 1
    return len(pattern)


def _quantifier(pattern: str, i: int) -> tuple[int, bool, bool]:
    """(length, repeats, unbounded) of the quantifier at i, (0, False, False) if there is none."""
    if i >= len(pattern):
        return 0, False, False
    c = pattern[i]
    if c in "*+":
        n = 1
        unbounded = True
        repeats = True
    elif c == "?":
        n, unbounded, repeats = 1, False, False
    elif c == "{":
        m = regex.match(r"\{(\d*)(,?)(\d*)\}", pattern[i:])
        if not m:
            return 0, False, False
        n = len(m.group(0))
        lo, comma, hi = m.group(1), m.group(2), m.group(3)
        unbounded = bool(comma) and not hi
        repeats = unbounded or int(hi or lo or "0") > 1
    else:
        return 0, False, False
    if i + n < len(pattern) and pattern[i + n] in "?+":  # lazy or possessive
        n += 1
    return n, repeats, unbounded


def nested_quantifier(pattern: str) -> str | None:
    """The first repeated group that holds an unbounded quantifier (a backtracking bomb), or None."""
    stack: list[tuple[int, bool]] = []  # (start index, holds an unbounded quantifier)
    i = 0
    while i < len(pattern):
        c = pattern[i]
        atom_end = i + 1
        group: tuple[int, bool] | None = None
        if c == "\\":
            atom_end = i + 2
            if i + 1 < len(pattern) and pattern[i + 1] in "pPNx" and i + 2 < len(pattern) and pattern[i + 2] == "{":
                atom_end = _close(pattern, i + 2, "}")
        elif c == "[":
            atom_end = _close(pattern, i, "]")
        elif c == "(":
            stack.append((i, False))
            i += 1
            continue
        elif c == ")":
            if not stack:
                return None  # unbalanced: compilation reports it
            group = stack.pop()
        n, repeats, unbounded = _quantifier(pattern, atom_end)
        if group is not None:
            start, inner_unbounded = group
            if repeats and inner_unbounded:
                return pattern[start : atom_end + n]
            unbounded = unbounded or inner_unbounded
        if unbounded and stack:
            stack[-1] = (stack[-1][0], True)
        i = atom_end + n
    return None


def check_pattern(pattern: object, where: str) -> str:
    """`pattern` if it is a safe pre-tokenizer regex; TokenizerError naming `where` otherwise."""
    if not isinstance(pattern, str) or not pattern:
        raise TokenizerError(f"{where}: the pre-tokenizer pattern must be a non-empty string")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise TokenizerError(f"{where}: the pre-tokenizer pattern has {len(pattern)} chars (at most {MAX_PATTERN_CHARS})")
    try:
        compiled = regex.compile(pattern)
    except (regex.error, ValueError, OverflowError, RecursionError) as e:
        raise TokenizerError(f"{where}: the pre-tokenizer pattern does not compile ({e})") from None
    if regex.search(r"\\[1-9]|\\g<|\(\?P=", pattern):
        raise TokenizerError(f"{where}: back-references are not allowed in a pre-tokenizer pattern")
    bomb = nested_quantifier(pattern)
    if bomb is not None:
        raise TokenizerError(
            f"{where}: the pre-tokenizer pattern repeats a group holding an unbounded quantifier ({bomb[:60]!r}), "
            "which backtracks catastrophically"
        )
    try:
        for probe in PROBES:
            pos = 0
            for m in compiled.finditer(probe, timeout=1.0):
                if m.start() == m.end():
                    raise TokenizerError(
                        f"{where}: the pre-tokenizer pattern matches the empty string "
                        f"(at {m.start()} of {probe[:20]!r}...)"
                    )
                if m.start() != pos:  # tiktoken encodes only the matches: the text between would be lost
                    break
                pos = m.end()
            if pos != len(probe):
                raise TokenizerError(
                    f"{where}: the pre-tokenizer pattern does not cover ordinary text (it skips "
                    f"{probe[pos:pos + 12]!r}...), so that text would be dropped"
                )
    except TimeoutError:
        raise TokenizerError(f"{where}: the pre-tokenizer pattern takes too long on ordinary text") from None
    return pattern


__all__ = ["MAX_PATTERN_CHARS", "check_pattern", "nested_quantifier"]
