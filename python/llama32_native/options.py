"""generate()'s keyword options turned into a validated Generation: sampling, processors, drafts, logprobs.

Contract: one function, `build_generation`, reads every option any generating call takes (Model.generate,
stream, chat, complete, complete_batch, the server, the CLI); an unknown name raises
InvalidArgumentTypeError naming ours when it is another library's spelling. Nothing runs before every
option is valid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from .constrained import grammar_option, grammar_processor
from .errors import InvalidArgumentError, InvalidArgumentTypeError
from .generation import MAX_TOP_LOGPROBS, Generation, StepModel
from .processors import LogitBias, LogitsProcessor, Penalties
from .sampling import SamplingParams
from .tools import call_grammar

__all__ = ["build_generation", "processors_for", "SAMPLING_OPTIONS", "PROCESSOR_OPTIONS"]

SAMPLING_OPTIONS = frozenset(f.name for f in dataclasses.fields(SamplingParams))
# Options that become logits processors (bias, penalties, grammars, tools): handled by constrained.py.
PROCESSOR_OPTIONS = frozenset({"logit_bias", "presence_penalty", "frequency_penalty", "response_format", "json_schema",
                               "regex", "grammar", "tools", "tool_choice", "parallel_tool_calls"})
OTHER_OPTIONS = frozenset({"logprobs", "top_logprobs", "speculative", "num_speculative_tokens", "logits_processors",
                           "stop_ids"})
# Other libraries' names for our options: a clear hint instead of a bare TypeError.
ALIASES = {"max_tokens": "max_new_tokens", "max_completion_tokens": "max_new_tokens", "max_length": "max_new_tokens",
           "stop_sequences": "stop", "repeat_penalty": "repetition_penalty", "n_predict": "max_new_tokens",
           "random_seed": "seed"}


def _check_unknown(options: dict[str, Any]) -> None:
    known = SAMPLING_OPTIONS | PROCESSOR_OPTIONS | OTHER_OPTIONS
    for name in options:
        if name in known:
            continue
        if name in ALIASES:
            raise InvalidArgumentTypeError(f"unknown option {name!r}: this library calls it {ALIASES[name]!r}")
        raise InvalidArgumentTypeError(f"unknown option {name!r} (known: {', '.join(sorted(known))})")


def _logprobs(options: dict[str, Any]) -> int | None:
    """logprobs=True/False/k and top_logprobs=k (OpenAI's two spellings) -> None or the number of alternatives."""
    lp, top = options.pop("logprobs", None), options.pop("top_logprobs", None)
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_TOP_LOGPROBS):
        raise InvalidArgumentError(f"top_logprobs must be an int in [0, {MAX_TOP_LOGPROBS}], got {top!r}")
    if lp is None or lp is False:
        if top:
            raise InvalidArgumentError("top_logprobs needs logprobs=True")
        return None
    if lp is True:
        return top or 0
    if isinstance(lp, int) and 0 <= lp <= MAX_TOP_LOGPROBS:
        return max(lp, top or 0)
    raise InvalidArgumentError(f"logprobs must be a bool or an int in [0, {MAX_TOP_LOGPROBS}], got {lp!r}")


def processors_for(model: Any, *, chat: bool = False, response_format: Any = None, json_schema: Any = None,
                   regex: str | None = None, grammar: str | None = None, logit_bias: Mapping[Any, Any] | None = None,
                   presence_penalty: float | None = None, frequency_penalty: float | None = None, tools: Any = None,
                   tool_choice: Any = None, parallel_tool_calls: Any = None) -> list[LogitsProcessor]:
    """The processors a request's options ask for, in the order they apply: logit bias, presence/frequency
    penalties, then the grammar mask (so a bias can never revive a token the grammar forbids).

    Constraints (at most one): `response_format` (OpenAI's, see grammar_from_response_format), `json_schema` (a
    schema), `regex`, `grammar` (Lark). `tools` with `tool_choice` "required" or a named function (chat only) force
    one call of that tool (tools.call_grammar); it replaces the response format. Every option is validated here,
    before any compute.
    """
    out: list[LogitsProcessor] = []
    if logit_bias is not None and not isinstance(logit_bias, Mapping):
        raise InvalidArgumentTypeError(f"logit_bias must be a dict, not {type(logit_bias).__name__}")
    if logit_bias:
        out.append(LogitBias(logit_bias, model.config.n_vocab))
    penalties = Penalties(0.0 if presence_penalty is None else presence_penalty,
                          0.0 if frequency_penalty is None else frequency_penalty)
    if penalties.active:
        out.append(penalties)
    text, name = grammar_option(response_format, json_schema, regex, grammar)
    if tools is not None or tool_choice is not None or parallel_tool_calls is not None:
        if not chat:
            raise InvalidArgumentError("tools, tool_choice and parallel_tool_calls are chat options")
        forced = call_grammar(model, tools, tool_choice, parallel_tool_calls)
        if forced is not None:
            text, name = forced, "tools"
    if text is not None:
        out.append(grammar_processor(model, text, model.stop_ids(chat=chat), name))
    return out


def build_generation(model: StepModel, prompt_ids: Sequence[int], chat: bool = False, index: int = 0,
                     **options: Any) -> Generation:
    """A Generation of prompt_ids for model with these options, everything validated first."""
    _check_unknown(options)
    sampling = {k: options.pop(k) for k in list(options) if k in SAMPLING_OPTIONS}
    params = SamplingParams(**sampling)
    logprobs = _logprobs(options)
    processors: list[LogitsProcessor] = list(options.pop("logits_processors", None) or ())
    for p in processors:
        if not isinstance(p, LogitsProcessor):
            raise InvalidArgumentTypeError(f"logits_processors must hold LogitsProcessor objects, not {type(p).__name__}")
    constrained = {k: options.pop(k) for k in list(options) if k in PROCESSOR_OPTIONS}
    if any(v is not None for v in constrained.values()):
        processors += processors_for(model, chat=chat, **constrained)
    proposer = None
    speculative, k = options.pop("speculative", None), options.pop("num_speculative_tokens", None)
    if speculative is not None:
        from .speculative import make_proposer

        proposer = make_proposer(model, speculative, k, params=params)  # a draft model samples with params too
    elif k is not None:
        raise InvalidArgumentError("num_speculative_tokens needs speculative='ngram' or a draft Model")
    stop_ids = options.pop("stop_ids", None)
    if stop_ids is None:
        stop_ids = model.stop_ids(chat=chat)
    return Generation(model, prompt_ids, params, processors=processors, proposer=proposer, logprobs=logprobs,
                      stop_ids=stop_ids, index=index)
