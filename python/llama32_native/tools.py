"""Tool calling: OpenAI tools and tool_choice rendered in the model's own format, and its replies parsed back into calls.

Contract: `plan_chat` validates tools, tool_choice and the conversation (assistant `tool_calls`, `tool`/`ipython`
results) before any compute and returns the prompt ids, the grammar that forces a call (tool_choice "required" or a
named function: exactly one call whose arguments are valid under the tool's schema, so it always parses), and a
parser. Formats, at token level through chat.py:

* Llama 3 (Llama 3.2 1B/3B Instruct): the zero-shot function-calling system prompt Meta documents for the 3.2
  lightweight models (llama-models, llama3_2/text_prompt_format.md), with the functions as a JSON list, asking for
  the JSON call syntax ``{"name": ..., "parameters": {...}}`` (several calls: a JSON list of them). Past calls are
  written in that syntax; tool results are ``ipython`` turns. The parser also reads Meta's pythonic list
  ``[f(a=1), g(b="x")]``, which the 3.2 models were trained to produce, and a leading ``<|python_tag|>``.
* ChatML (SmolLM2 and other ChatML models): the Hermes/Qwen convention. The system turn lists the tools inside
  ``<tools></tools>`` (one JSON object per line); a call is ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n
  </tool_call>`` (several: one block per call); a result is a user turn ``<tool_response>\\n...\\n</tool_response>``.

`auto` parses the free reply and falls back to plain content when it is not a well-formed call of a known tool;
`none` leaves the tools out of the prompt. A forced call fills only the declared arguments when the tool's schema
does not say `additionalProperties` (as OpenAI's strict mode).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from .constrained import json_schema_grammar, lark_json_rule, load_llguidance
from .errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = [
    "ChatReply",
    "Tool",
    "ToolCall",
    "ToolPlan",
    "ToolStream",
    "call_grammar",
    "chat_with_tools",
    "has_tool_turns",
    "normalize_tool_choice",
    "normalize_tools",
    "plan_chat",
    "tool_call_deltas",
]

MAX_TOOLS = 128
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

LLAMA3_TOOL_SYSTEM = """You are an expert in composing functions. You are given a question and a set of possible functions.
Based on the question, you will need to make one or more function/tool calls to achieve the purpose.
If none of the function can be used, point it out. If the given question lacks the parameters required by the function,
also point it out. You should only return the function call in tools call sections.

If you decide to invoke any of the function(s), you MUST put it in the format of {{"name": function name, "parameters": dictionary of argument name and its value}}
You SHOULD NOT include any other text in the response.

Here is a list of functions in JSON format that you can invoke.

{functions}"""

CHATML_TOOL_SYSTEM = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{functions}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""


@dataclasses.dataclass(frozen=True)
class Tool:
    """One function the model may call: its name, description and JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


@dataclasses.dataclass
class ToolCall:
    """A call the model made: an id, the function name and its arguments as JSON text (OpenAI's shape)."""

    name: str
    arguments: str
    id: str = dataclasses.field(default_factory=lambda: "call_" + uuid.uuid4().hex[:24])

    @property
    def args(self) -> Any:
        return json.loads(self.arguments)

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclasses.dataclass
class ChatReply:
    """The assistant's answer: content (None when it is only calls), tool calls, finish reason ("tool_calls" when it
    called tools)."""

    content: str | None
    tool_calls: list[ToolCall]
    finish_reason: str
    n_prompt: int = 0
    n_generated: int = 0
    logprobs: list[Any] | None = None

    def to_openai(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            msg["tool_calls"] = [c.to_openai() for c in self.tool_calls]
        return msg


# ---------------------------------------------------------------------------------------------------------------
# Validation


def normalize_tools(tools: Any) -> list[Tool]:
    """OpenAI `tools` ([{"type": "function", "function": {"name", "description", "parameters"}}]) -> [Tool]."""
    if tools is None:
        return []
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise InvalidArgumentTypeError(f"tools must be a list, not {type(tools).__name__}")
    if len(tools) > MAX_TOOLS:
        raise InvalidArgumentError(f"tools: {len(tools)} tools, at most {MAX_TOOLS} allowed")
    out: list[Tool] = []
    for i, t in enumerate(tools):
        if not isinstance(t, Mapping):
            raise InvalidArgumentTypeError(f"tools[{i}] must be an object, not {type(t).__name__}")
        if t.get("type", "function") != "function":
            raise InvalidArgumentError(f"tools[{i}].type must be 'function', got {t.get('type')!r}")
        fn = t.get("function")
        if not isinstance(fn, Mapping):
            raise InvalidArgumentError(f"tools[{i}].function must be an object with a name")
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise InvalidArgumentError(f"tools[{i}].function.name must match [A-Za-z0-9_.-]{{1,64}}, got {name!r}")
        if any(o.name == name for o in out):
            raise InvalidArgumentError(f"tools[{i}]: the function name {name!r} appears twice")
        desc = fn.get("description", "")
        if not isinstance(desc, str):
            raise InvalidArgumentTypeError(f"tools[{i}].function.description must be a str")
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, Mapping):
            raise InvalidArgumentTypeError(f"tools[{i}].function.parameters must be a JSON schema object")
        out.append(Tool(name, desc, json.loads(json.dumps(params))))
    return out


def normalize_tool_choice(tool_choice: Any, tools: Sequence[Tool]) -> str | Tool:
    """"auto" | "none" | "required" | {"type": "function", "function": {"name": ...}} -> the mode or the Tool."""
    if tool_choice is None:
        return "auto" if tools else "none"
    if isinstance(tool_choice, str):
        if tool_choice not in ("auto", "none", "required"):
            raise InvalidArgumentError(f"tool_choice must be auto, none, required or a function, got {tool_choice!r}")
        if tool_choice == "required" and not tools:
            raise InvalidArgumentError("tool_choice 'required' needs tools")
        return tool_choice if tools else "none"
    if isinstance(tool_choice, Mapping):
        fn = tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, Mapping) else None
        for t in tools:
            if t.name == name:
                return t
        raise InvalidArgumentError(f"tool_choice names the function {name!r}, which is not in tools")
    raise InvalidArgumentTypeError(f"tool_choice must be a str or an object, not {type(tool_choice).__name__}")


def _content_text(msg: Mapping[str, Any], i: int) -> str:
    content = msg.get("content")
    if content is None:
        if msg.get("role") != "assistant":  # an assistant turn that only calls tools has no content
            raise InvalidArgumentError(f"messages[{i}] has no 'content'")
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        parts = []
        for j, part in enumerate(content):
            if not (isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise InvalidArgumentError(f"messages[{i}].content[{j}]: only text parts are supported")
            parts.append(part["text"])
        return "".join(parts)
    raise InvalidArgumentTypeError(f"messages[{i}].content must be a str, not {type(content).__name__}")


def _history_calls(msg: Mapping[str, Any], i: int) -> list[tuple[str, Any]]:
    calls = msg.get("tool_calls") or []
    if isinstance(calls, (str, bytes, Mapping)) or not isinstance(calls, Sequence):
        raise InvalidArgumentTypeError(f"messages[{i}].tool_calls must be a list")
    out = []
    for j, c in enumerate(calls):
        fn = c.get("function") if isinstance(c, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise InvalidArgumentError(f"messages[{i}].tool_calls[{j}] needs function.name")
        args = fn.get("arguments", "{}")
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError as e:
                raise InvalidArgumentError(f"messages[{i}].tool_calls[{j}].function.arguments is not JSON: {e}") from None
        out.append((fn["name"], args))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Formats


def _call_schema(tool: Tool, args_key: str) -> dict[str, Any]:
    params = dict(tool.parameters or {"type": "object"})
    if "properties" in params and "additionalProperties" not in params:
        params["additionalProperties"] = False  # a forced call fills the declared arguments only (as OpenAI's strict)
    return {"type": "object", "properties": {"name": {"const": tool.name}, args_key: params},
            "required": ["name", args_key], "additionalProperties": False}


def _one_of_calls(tools: Sequence[Tool], args_key: str) -> dict[str, Any]:
    schemas = [_call_schema(t, args_key) for t in tools]
    return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}


def _call_from_obj(obj: Any, args_keys: tuple[str, ...]) -> tuple[str, Any] | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    for key in args_keys:
        if key in obj:
            return (obj["name"], obj[key]) if isinstance(obj[key], dict) else None
    return None


_PY_CONSTANTS = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}


def _py_value(node: ast.AST) -> Any:
    if isinstance(node, ast.Name) and node.id in _PY_CONSTANTS:
        return _PY_CONSTANTS[node.id]
    if isinstance(node, ast.List):
        return [_py_value(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {_py_value(k): _py_value(v) for k, v in zip(node.keys, node.values) if k is not None}
    return ast.literal_eval(node)


def _pythonic_calls(text: str) -> list[tuple[str, Any]] | None:
    """Meta's Llama 3.2 call list ``[f(a=1, b="x"), g()]`` -> [(name, args)], None if it is not one."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return None
    body = tree.body
    if not isinstance(body, ast.List) or not body.elts:
        return None
    out = []
    for call in body.elts:
        if not isinstance(call, ast.Call) or call.args or not isinstance(call.func, (ast.Name, ast.Attribute)):
            return None
        name = ast.unparse(call.func)
        try:
            args = {kw.arg: _py_value(kw.value) for kw in call.keywords if kw.arg is not None}
        except (ValueError, TypeError, SyntaxError):
            return None
        out.append((name, args))
    return out


class Llama3ToolFormat:
    """Meta's Llama 3.2 lightweight-model tool prompt with JSON calls (see the module docstring)."""

    args_key = "parameters"
    closing_len = len("}")  # what follows a forced call's arguments

    @staticmethod
    def held_from(text: str) -> int | None:
        """Where a call may begin in `text` (held back while streaming), None if nowhere: a reply that is a call
        starts with '{', '[' or '<|python_tag|>'."""
        body = text.lstrip()
        if not body:
            return 0
        return 0 if body[0] in "{[" or "<|python_tag|>".startswith(body[:14]) else None

    def system_text(self, tools: Sequence[Tool]) -> str:
        return LLAMA3_TOOL_SYSTEM.format(functions=json.dumps([t.spec() for t in tools], indent=4))

    def render_calls(self, calls: Sequence[tuple[str, Any]]) -> str:
        objs = [{"name": n, "parameters": a} for n, a in calls]
        return json.dumps(objs[0] if len(objs) == 1 else objs)

    def tool_result(self, content: str) -> dict[str, str]:
        return {"role": "ipython", "content": content}

    def grammar(self, tools: Sequence[Tool]) -> str:
        return json_schema_grammar(_one_of_calls(tools, self.args_key), "tool parameters")

    def parse(self, text: str) -> tuple[str, list[tuple[str, Any]]] | None:
        body = text.strip()
        body = body.removeprefix("<|python_tag|>").strip()
        try:
            obj = json.loads(body)
        except json.JSONDecodeError:
            calls = _pythonic_calls(body)
            return ("", calls) if calls else None
        objs = obj if isinstance(obj, list) and obj else [obj]
        calls = [_call_from_obj(o, ("parameters", "arguments")) for o in objs]
        if any(c is None for c in calls):
            return None
        return "", [c for c in calls if c is not None]


_TOOL_CALL_RE = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


class ChatMLToolFormat:
    """Hermes/Qwen tool calls in ChatML (see the module docstring)."""

    args_key = "arguments"
    closing_len = len("}\n</tool_call>")  # what follows a forced call's arguments

    @staticmethod
    def held_from(text: str) -> int | None:
        """Where a call may begin in `text` (held back while streaming), None if nowhere."""
        at = text.find("<tool_call>")
        if at >= 0:
            return at
        tail = text.rfind("<")
        return tail if tail >= 0 and "<tool_call>".startswith(text[tail:]) else None

    def system_text(self, tools: Sequence[Tool]) -> str:
        lines = "\n".join(json.dumps({"type": "function", "function": t.spec()}) for t in tools)
        return CHATML_TOOL_SYSTEM.format(functions=lines)

    def render_calls(self, calls: Sequence[tuple[str, Any]]) -> str:
        return "\n".join(f'<tool_call>\n{json.dumps({"name": n, "arguments": a})}\n</tool_call>' for n, a in calls)

    def tool_result(self, content: str) -> dict[str, str]:
        return {"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"}

    def grammar(self, tools: Sequence[Tool]) -> str:
        lark = 'start: "<tool_call>\\n" call "\\n</tool_call>"\ncall: ' + lark_json_rule(
            _one_of_calls(tools, self.args_key), "tool parameters")
        return load_llguidance().LLMatcher.grammar_from_lark(lark)

    def parse(self, text: str) -> tuple[str, list[tuple[str, Any]]] | None:
        blocks = _TOOL_CALL_RE.findall(text)
        if not blocks:
            return None
        calls = []
        for block in blocks:
            try:
                call = _call_from_obj(json.loads(block), ("arguments", "parameters"))
            except json.JSONDecodeError:
                return None
            if call is None:
                return None
            calls.append(call)
        return _TOOL_CALL_RE.sub("", text).strip(), calls


def tool_format_for(chat_format: Any) -> Llama3ToolFormat | ChatMLToolFormat:
    from .chat import ChatMLFormat, Llama3ChatFormat

    if isinstance(chat_format, Llama3ChatFormat):
        return Llama3ToolFormat()
    if isinstance(chat_format, ChatMLFormat):
        return ChatMLToolFormat()
    raise InvalidArgumentError("tool calling needs a Llama 3 or ChatML chat format")


# ---------------------------------------------------------------------------------------------------------------
# A chat request with tools


@dataclasses.dataclass
class ToolPlan:
    """What a chat request with tools needs: prompt ids, the grammar forcing a call (or None), and a parser."""

    prompt_ids: list[int]
    grammar: str | None
    tools: list[Tool]
    choice: str | Tool
    fmt: Llama3ToolFormat | ChatMLToolFormat
    parallel: bool = True  # False: a reply holding several calls keeps the first (parallel_tool_calls=false)

    @property
    def forced(self) -> bool:
        """True when the reply must be a call (tool_choice required or named)."""
        return self.choice != "auto" and self.choice != "none"

    def parse(self, text: str, finish_reason: str = "stop") -> ChatReply:
        """The reply as content and/or tool calls; finish_reason becomes "tool_calls" when it holds calls."""
        if self.choice == "none" or not self.tools:
            return ChatReply(text, [], finish_reason)
        parsed = self.fmt.parse(text) if finish_reason != "length" or self.forced else None
        known = {t.name for t in self.tools}
        if parsed is None or not all(name in known for name, _ in parsed[1]):
            return ChatReply(text, [], finish_reason)
        content, calls = parsed
        out = [ToolCall(name, json.dumps(args, ensure_ascii=False)) for name, args in calls[: None if self.parallel else 1]]
        m = _FORCED_HEAD.match(text) if self.forced else None
        if m is not None:  # a forced call keeps its arguments as generated (as streamed), byte for byte
            out[0].arguments = text[m.end():len(text) - self.fmt.closing_len]
        return ChatReply(content or None, out, "tool_calls")


def render_messages(messages: Any, fmt: Llama3ToolFormat | ChatMLToolFormat,
                    tools: Sequence[Tool]) -> list[dict[str, str]]:
    """OpenAI messages (assistant tool_calls, tool results, text parts) -> plain role/content messages in the
    model's tool format; the tool prompt joins (or becomes) the system message when `tools` is not empty."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise InvalidArgumentTypeError(f"messages must be a list of dicts, not {type(messages).__name__}")
    out: list[dict[str, str]] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            raise InvalidArgumentTypeError(f"messages[{i}] must be a dict, not {type(msg).__name__}")
        role = msg.get("role")
        text = _content_text(msg, i)
        if role == "assistant" and msg.get("tool_calls"):
            rendered = fmt.render_calls(_history_calls(msg, i))
            out.append({"role": "assistant", "content": (text.strip() + "\n" + rendered) if text.strip() else rendered})
        elif role in ("tool", "ipython"):
            out.append(fmt.tool_result(text))
        else:
            out.append({"role": role, "content": text})  # chat.validate_messages checks the role
    if tools:
        prompt = fmt.system_text(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": prompt + "\n\n" + out[0]["content"]}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out


def call_grammar(model: Any, tools: Any, tool_choice: Any, parallel_tool_calls: Any = None) -> str | None:
    """The llguidance grammar of one forced call (tool_choice required or named) in the model's format, else None."""
    if parallel_tool_calls is not None and not isinstance(parallel_tool_calls, bool):
        raise InvalidArgumentTypeError("parallel_tool_calls must be a bool")
    specs = normalize_tools(tools)
    choice = normalize_tool_choice(tool_choice, specs)
    if choice == "auto" or choice == "none":
        return None
    fmt = tool_format_for(model.chat_format)
    return fmt.grammar([choice] if isinstance(choice, Tool) else specs)


def plan_chat(model: Any, messages: Any, tools: Any = None, tool_choice: Any = None,
              parallel_tool_calls: Any = True, date_string: str | None = None) -> ToolPlan:
    """Validate a chat request with tools and build its prompt and constraint (see the module docstring).

    With tool_choice required or named, the reply is exactly one call (a forced call is one call even when
    parallel_tool_calls is true); with auto, the model may make several.
    """
    if not isinstance(parallel_tool_calls, bool):
        raise InvalidArgumentTypeError("parallel_tool_calls must be a bool")
    chat_format = model.chat_format
    if chat_format is None:
        raise InvalidArgumentError("this model's tokenizer has no known chat format")
    fmt = tool_format_for(chat_format)
    specs = normalize_tools(tools)
    choice = normalize_tool_choice(tool_choice, specs)
    shown = specs if choice != "none" else []
    plain = render_messages(messages, fmt, shown)
    kwargs = {"date_string": date_string} if date_string is not None else {}
    ids = chat_format.encode(plain, add_generation_prompt=True, **kwargs)
    grammar = None
    if isinstance(choice, Tool):
        grammar = fmt.grammar([choice])
    elif choice == "required":
        grammar = fmt.grammar(specs)
    return ToolPlan(ids, grammar, specs, choice, fmt, parallel_tool_calls)


def has_tool_turns(messages: Any) -> bool:
    """True when a conversation holds assistant tool_calls or tool/ipython results (it needs this module)."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        return False
    return any(isinstance(m, Mapping) and (m.get("tool_calls") or m.get("role") in ("tool", "ipython"))
               for m in messages)


def chat_with_tools(model: Any, messages: Any, *, date_string: str | None = None, **options: Any) -> ChatReply:
    """Model.chat with tools: the reply as content and/or ToolCall objects (finish_reason "tool_calls" when it
    called tools), with token counts and logprobs (logprobs=...). Everything is validated before any compute."""
    from .generation import Decoder

    if options.pop("stream", False):
        raise InvalidArgumentError("stream=True with tools is not supported in Python; the server streams tool calls")
    plan = plan_chat(model, messages, options.get("tools"), options.get("tool_choice"),
                     options.get("parallel_tool_calls", True), date_string)
    gen = model.generation(plan.prompt_ids, chat=True, **options)
    dec = Decoder(model)
    dec.add(gen)
    try:
        while dec.busy:
            for _, upd in dec.step():
                if upd.error is not None:
                    raise upd.error
    finally:
        dec.close()
    r = gen.result()
    reply = plan.parse(r.text, r.finish_reason)
    reply.n_prompt, reply.n_generated, reply.logprobs = r.n_prompt, r.n_generated, r.logprobs
    return reply


_FORCED_HEAD = re.compile(r'^(?:<tool_call>\n)?\{"name": "((?:[^"\\]|\\.)*)", "(?:parameters|arguments)": ')


class ToolStream:
    """Streams a chat reply when tools are on: content passes through as it comes, text that may be a call is held
    back, and at the end the held text becomes tool calls (or, when it is not a call, content after all). A forced
    call (tool_choice required or named; its shape is fixed by the grammar) streams as it is generated: the name
    once it is complete, then the arguments piece by piece."""

    def __init__(self, plan: ToolPlan) -> None:
        self.plan = plan
        self._text = ""
        self._sent = 0  # characters of _text already sent as content
        self._holding = plan.forced  # a forced call is never content
        self._call: ToolCall | None = None  # the forced call whose name was sent
        self._args_at = 0  # where its arguments start in _text
        self._args_sent = 0  # characters of its arguments sent
        self._tail = plan.fmt.closing_len

    @property
    def active(self) -> bool:
        return self.plan.choice != "none" and bool(self.plan.tools)

    def push(self, text: str) -> str:
        """Add generated text; returns the content that can be sent now."""
        self._text += text
        if not self.active:
            return self._release()
        if not self._holding:
            at = self.plan.fmt.held_from(self._text)
            if at is None:
                return self._release()
            if at >= self._sent:
                out = self._text[self._sent:at]
                self._sent = at
                if self._text[at:].lstrip().startswith(("{", "[", "<tool_call>", "<|python_tag|>")):
                    self._holding = True  # committed to a call: nothing more is released until the end
                return out
        return ""

    def call_deltas(self) -> list[dict[str, Any]]:
        """Tool-call deltas of a forced call that can be sent now (the name, then arguments held back by the length
        of the closing text that follows them)."""
        if not (self.plan.forced and self.active):
            return []
        out: list[dict[str, Any]] = []
        if self._call is None:
            m = _FORCED_HEAD.match(self._text)
            if m is None:
                return []
            self._call = ToolCall(json.loads(f'"{m.group(1)}"'), "")
            self._args_at = m.end()
            out.append({"tool_calls": [{"index": 0, "id": self._call.id, "type": "function",
                                        "function": {"name": self._call.name, "arguments": ""}}]})
        ready = len(self._text) - self._tail - self._args_at
        if ready > self._args_sent:
            piece = self._text[self._args_at + self._args_sent:self._args_at + ready]
            self._args_sent = ready
            out.append({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        return out

    def _release(self) -> str:
        out = self._text[self._sent:]
        self._sent = len(self._text)
        return out

    def finish(self, finish_reason: str) -> tuple[str, ChatReply, list[dict[str, Any]]]:
        """(content still to send, the whole reply, tool-call deltas still to send) once generation ended."""
        reply = self.plan.parse(self._text, finish_reason)
        if self._call is not None and reply.tool_calls:  # the streamed call: its id, its arguments as sent
            args = self._text[self._args_at:len(self._text) - self._tail]
            rest = args[self._args_sent:]
            self._call.arguments = args
            reply.tool_calls = [self._call]
            return "", reply, [{"tool_calls": [{"index": 0, "function": {"arguments": rest}}]}] if rest else []
        if reply.tool_calls:
            return "", reply, tool_call_deltas(reply.tool_calls)
        return self._release(), reply, []


def tool_call_deltas(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """OpenAI's streamed `delta`s for finished calls: per call, one with id, type and name, one with the arguments."""
    out: list[dict[str, Any]] = []
    for k, c in enumerate(calls):
        out.append({"tool_calls": [{"index": k, "id": c.id, "type": "function",
                                    "function": {"name": c.name, "arguments": ""}}]})
        out.append({"tool_calls": [{"index": k, "function": {"arguments": c.arguments}}]})
    return out
