"""Pydantic models of the request bodies: strict types, unknown fields ignored (clients send extras).

Field annotations use Optional/Union: pydantic evaluates them at run time (Python 3.9 has no `X | Y`).
"""

from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CompletionRequest", "ChatRequest", "ScoreRequest", "ScoreParameters", "ScoreInput", "SamplingFields"]


class _Lenient(BaseModel):
    """Strict types, unknown fields ignored (clients send fields this server does not use).

    Field annotations use Optional/Union: pydantic evaluates them at run time (Python 3.9 has no `X | Y`).
    """

    model_config = ConfigDict(strict=True, extra="ignore")


class SamplingFields(_Lenient):
    model: Optional[str] = None
    max_tokens: Optional[int] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    min_p: Optional[float] = None
    repetition_penalty: Optional[float] = None
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    n: int = 1
    seed: Optional[int] = None
    stop: Union[str, list[str], None] = None
    stream: bool = False
    stream_options: Optional[dict[str, Any]] = None
    user: Optional[str] = None
    logit_bias: Optional[dict[str, float]] = None
    response_format: Optional[dict[str, Any]] = None  # OpenAI's for chat; also taken by completions (extension)


class CompletionRequest(SamplingFields):
    prompt: Union[str, list[str], list[int]]
    logprobs: Optional[int] = None
    echo: bool = False
    best_of: Optional[int] = None
    suffix: Optional[str] = None


class ChatRequest(SamplingFields):
    messages: list[dict[str, Any]]
    max_completion_tokens: Optional[int] = None
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = None
    tools: Optional[list[Any]] = None
    tool_choice: Union[str, dict[str, Any], None] = None
    parallel_tool_calls: Optional[bool] = None
    functions: Optional[list[Any]] = None  # OpenAI's deprecated spelling of tools: refused with a pointer to tools
    function_call: Union[str, dict[str, Any], None] = None


class ScoreParameters(_Lenient):
    top_p: Optional[float] = None
    temperature: Optional[float] = None
    max_new_tokens: Optional[int] = None
    do_sample: Optional[bool] = None
    top_k: Optional[int] = None
    min_p: Optional[float] = None
    repetition_penalty: Optional[float] = None
    seed: Optional[int] = None
    stop: Union[str, list[str], None] = None


class ScoreInput(_Lenient):
    # strings (completions), one conversation of role/content messages, or a list of conversations (chat format)
    input_string: list[Union[str, dict[str, Any], list[dict[str, Any]]]] = Field(min_length=1)
    parameters: ScoreParameters = Field(default_factory=ScoreParameters)


class ScoreRequest(_Lenient):
    input_data: ScoreInput
