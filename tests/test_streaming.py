"""TextStream tests: multi-byte characters split across tokens, stop strings straddling tokens,
specials, invalid UTF-8, and the invariant pushes + finish == decoded text cut at the first stop."""

from __future__ import annotations

import random

import pytest
from conftest_tokenizer import llama3_tokenizer, tiny_llama3_tokenizer
from llama32_native.streaming import TextStream
from llama32_native.tokenizer import GPT2_PATTERN, Tokenizer


@pytest.fixture(scope="module", params=["tiny-llama3", "llama3"])
def tok(request: pytest.FixtureRequest) -> Tokenizer:
    """A Llama 3 tokenizer: the tiny one built here (always), Meta's real one (where llama-models is installed)."""
    return tiny_llama3_tokenizer() if request.param == "tiny-llama3" else llama3_tokenizer()


@pytest.fixture(scope="module")
def byte_tok() -> Tokenizer:
    """One token per byte (id == byte value) plus two specials: any byte sequence is reachable."""
    return Tokenizer.from_vocab(
        [bytes([b]) for b in range(256)],
        {"<|s|>": 256, "<|e|>": 257},
        GPT2_PATTERN,
        bos_id=256,
        eos_id=257,
        name="bytes",
    )


def stream_all(tok: Tokenizer, ids: list[int], stop=None, skip_special: bool = True) -> tuple[list[str], TextStream]:
    ts = TextStream(tok, stop, skip_special)
    chunks = [ts.push(i) for i in ids]
    chunks.append(ts.finish())
    return chunks, ts


def expected_text(tok: Tokenizer, ids: list[int], stops: list[str], skip_special: bool = True) -> str:
    """The text cut before the stop string that completes first (character by character)."""
    text = tok.decode(ids, skip_special=skip_special)
    for end in range(len(text) + 1):
        done = [s for s in stops if text[:end].endswith(s)]
        if done:
            return text[: end - len(max(done, key=len))]
    return text


def test_multibyte_split_across_tokens(tok: Tokenizer) -> None:
    text = "Llama 🦙 says नमस्ते and สวัสดี — 日本語 ok 👩‍👩‍👧‍👦!"
    ids = tok.encode(text, bos=False)
    # at least one token must end inside a character for this test to mean anything
    assert any(not _is_utf8(tok.token_bytes(i)) for i in ids)
    chunks, ts = stream_all(tok, ids)
    assert "".join(chunks) == text == ts.text
    assert all("\ufffd" not in c for c in chunks)
    assert not ts.stopped


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_stop_string_straddles_two_tokens(tok: Tokenizer) -> None:
    text = "Hello world, and goodbye."
    ids = tok.encode(text, bos=False)
    assert tok.decode(ids[:1]) == "Hello" and tok.decode(ids[1:2]) == " world"
    ts = TextStream(tok, stop=["lo wor"])
    first = ts.push(ids[0])
    assert first == "Hel"  # "lo" could start the stop string: held back
    assert ts.push(ids[1]) == ""
    assert ts.stopped and ts.text == "Hel"
    assert ts.push(ids[2]) == "" and ts.finish() == ""


def test_held_tail_is_released_when_no_stop(tok: Tokenizer) -> None:
    ids = tok.encode("Hello wonderful", bos=False)
    chunks, ts = stream_all(tok, ids, stop=["lo world", "xyz"])
    assert "".join(chunks) == "Hello wonderful" and not ts.stopped
    ids = tok.encode("say STO", bos=False)
    chunks, ts = stream_all(tok, ids, stop="STOP")
    assert chunks[-1] == "STO"  # held until finish
    assert "".join(chunks) == "say STO"


def test_first_completed_stop_wins_and_stop_inside_one_token(tok: Tokenizer) -> None:
    ids = tok.encode("one two three four", bos=False)
    chunks, ts = stream_all(tok, ids, stop=["four", "two"])
    assert "".join(chunks) == "one " and ts.stopped
    chunks, ts = stream_all(tok, ids, stop=["hre"])
    assert "".join(chunks) == "one two t"
    # "o t" completes before "two three" does: it wins although the other starts earlier
    chunks, ts = stream_all(tok, ids, stop=["two three", "o t"])
    assert "".join(chunks) == "one tw"
    # both end at the same character: the longer one is cut
    chunks, ts = stream_all(tok, ids, stop=["ee", "three"])
    assert "".join(chunks) == "one two "


def test_specials_skipped_or_shown(tok: Tokenizer) -> None:
    ids = [tok.special("<|begin_of_text|>"), *tok.encode("Hi there", bos=False), tok.special("<|eot_id|>")]
    chunks, _ = stream_all(tok, ids)
    assert "".join(chunks) == "Hi there"
    chunks, _ = stream_all(tok, ids, skip_special=False)
    assert "".join(chunks) == "<|begin_of_text|>Hi there<|eot_id|>"
    chunks, ts = stream_all(tok, ids, stop="<|eot", skip_special=False)
    assert "".join(chunks) == "<|begin_of_text|>Hi there" and ts.stopped


def test_invalid_ids_and_stop_params(tok: Tokenizer) -> None:
    ts = TextStream(tok)
    for bad in (-1, 128256):
        with pytest.raises(ValueError):
            ts.push(bad)
    with pytest.raises(TypeError):
        ts.push("1")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        TextStream(tok, stop=[""])
    with pytest.raises(TypeError):
        TextStream(tok, stop=[1])  # type: ignore[list-item]


def test_invalid_utf8_matches_one_shot_decode(byte_tok: Tokenizer) -> None:
    rng = random.Random(0)
    pool = [b"\xe6\x97\xa5", b"\xf0\x9f\xa6\x99", b"a", b"\xc3", b"\x80", b"\xff", b"\xed\xa0\x80", b"\xf4\x90"]
    for _ in range(300):
        data = b"".join(rng.choice(pool) for _ in range(rng.randint(0, 12)))
        chunks, _ = stream_all(byte_tok, list(data))
        assert "".join(chunks) == data.decode("utf-8", errors="replace")


def test_special_between_bytes_of_a_character(byte_tok: Tokenizer) -> None:
    ids = [0xE6, 256, 0x97, 0xA5]  # "日" with a special inside
    chunks, _ = stream_all(byte_tok, ids)
    assert "".join(chunks) == "日"
    chunks, _ = stream_all(byte_tok, ids, skip_special=False)
    assert "".join(chunks) == "\ufffd<|s|>\ufffd\ufffd"  # as tokenizer.decode does
    assert "".join(chunks) == byte_tok.decode(ids)


def test_random_stops_invariant(tok: Tokenizer, byte_tok: Tokenizer) -> None:
    """pushes + finish == decoded text cut at the first stop; no chunk ever shows a stop."""
    rng = random.Random(42)
    corpus = "The quick brown fox 🦙 jumps: größer — 日本語のテキスト, नमस्ते!\n\nEND of text. " * 3
    for trial in range(300):
        t = tok if trial % 2 else byte_tok
        start = rng.randrange(len(corpus) - 40)
        text = corpus[start : start + rng.randint(1, 120)]
        ids = t.encode(text, bos=False)
        stops = []
        for _ in range(rng.randint(0, 3)):
            a = rng.randrange(len(text))
            stops.append(text[a : a + rng.randint(1, 8)] if rng.random() < 0.8 else "zz" + text[a : a + 3])
        stops = [s for s in stops if s]
        chunks, ts = stream_all(t, ids, stop=stops)
        out = "".join(chunks)
        assert out == expected_text(t, ids, stops), (text, stops)
        assert ts.stopped == any(s in t.decode(ids) for s in stops)
        assert not any(s in out for s in stops)


def test_many_long_stops_stay_fast(tok: Tokenizer) -> None:
    stops = [f"{i:03d}" + "ab" * 510 for i in range(64)]
    ids = tok.encode("abababab " * 2000, bos=False)
    chunks, ts = stream_all(tok, ids, stop=stops)
    assert "".join(chunks) == "abababab " * 2000 and not ts.stopped
