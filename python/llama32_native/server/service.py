"""From validated request bodies to scheduler jobs, and from job events back to results.

Contract: every check (prompt length, max_tokens, sampling values, messages, options) happens here, before
anything is queued, and fails as ApiError with the parameter at fault. A request whose client disconnects
cancels its jobs at once, streamed or not, running or queued.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from ..errors import Error
from ..generation import Generation
from ..tools import ToolPlan, plan_chat
from .config import ServerConfig
from .errors import ApiError
from .scheduler import DoneEvent, Event, Job, QueueFullError, Scheduler, ShuttingDownError, TextEvent
from .schemas import ChatRequest, SamplingFields

__all__ = ["Service", "usage"]

# Request fields passed to the generation as they are (None: not given); OpenAI's defaults otherwise.
_SAMPLING_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "top_k": None, "min_p": None, "repetition_penalty": None,
                      "seed": None, "stop": None}
_OPTION_FIELDS = ("logit_bias", "presence_penalty", "frequency_penalty", "response_format", "tools", "tool_choice",
                  "parallel_tool_calls")


class Service:
    """Turns requests into jobs for one model's scheduler, and job events into per-choice results."""

    def __init__(self, model: Any, scheduler: Scheduler, config: ServerConfig):
        self.model, self.scheduler, self.config = model, scheduler, config
        self.n_ctx = model.context_length
        self.chat_format = model.chat_format if model.tokenizer is not None else None

    # -------------------------------------------------------------- validation
    def options(self, req: SamplingFields, max_tokens: int | None, default_max: int, n_prompt: int,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """generate()'s options for a request, with the server's limits on prompt and output length."""
        cfg = self.config
        limit = cfg.max_prompt_tokens or self.n_ctx
        if n_prompt > limit:
            raise ApiError(f"the prompt has {n_prompt} tokens, more than the limit of {limit}",
                           "messages" if isinstance(req, ChatRequest) else "prompt", "context_length_exceeded")
        if max_tokens is None:
            max_tokens = min(default_max, cfg.max_tokens, self.n_ctx - n_prompt)
            if max_tokens < 1:
                raise ApiError(f"the prompt of {n_prompt} tokens fills the context of {self.n_ctx}",
                               "prompt", "context_length_exceeded")
        if max_tokens < 1 or max_tokens > cfg.max_tokens:
            raise ApiError(f"max_tokens must be in [1, {cfg.max_tokens}], got {max_tokens}", "max_tokens")
        if n_prompt + max_tokens > self.n_ctx:
            raise ApiError(f"the prompt of {n_prompt} tokens + max_tokens={max_tokens} exceeds the context of "
                           f"{self.n_ctx}", "max_tokens", "context_length_exceeded")
        opts: dict[str, Any] = {"max_new_tokens": max_tokens}
        for name, default in _SAMPLING_DEFAULTS.items():
            v = getattr(req, name, None)
            v = default if v is None else v
            if v is not None:
                opts[name] = v
        for name in _OPTION_FIELDS:
            v = getattr(req, name, None)
            if v is not None and v != 0:
                opts[name] = v
        opts.update(extra or {})
        return opts

    def check_common(self, req: SamplingFields) -> None:
        if not 1 <= req.n <= self.config.max_n:
            raise ApiError(f"n must be in [1, {self.config.max_n}], got {req.n}", "n")

    def tokenize(self, text: str) -> list[int]:
        if self.model.tokenizer is None:
            raise ApiError("this model has no tokenizer: send token ids", "prompt")
        try:
            return self.model.prompt_ids(text)
        except (Error, TypeError, ValueError, UnicodeError) as e:
            raise ApiError(f"cannot use the prompt: {e}", "prompt") from None

    def prompt_ids(self, prompt: str | list[str] | list[int]) -> list[list[int]]:
        if isinstance(prompt, str):
            return [self.tokenize(prompt)]
        if not prompt:
            raise ApiError("prompt must not be empty", "prompt")
        if all(isinstance(p, int) for p in prompt):
            n_vocab = self.model.config.n_vocab
            bad = [t for t in prompt if not 0 <= t < n_vocab]
            if bad:
                raise ApiError(f"token id {bad[0]} is out of range [0, {n_vocab})", "prompt")
            return [list(prompt)]
        if len(prompt) > self.config.max_prompts:
            raise ApiError(f"at most {self.config.max_prompts} prompts per request, got {len(prompt)}", "prompt")
        return [self.tokenize(p) for p in prompt]

    def chat_plan(self, req: ChatRequest) -> ToolPlan:
        """The request's prompt ids (tools and tool turns rendered in the model's format) and how to read the
        reply (tools.plan_chat); ApiError naming messages, tools, tool_choice or parallel_tool_calls."""
        if self.chat_format is None:
            raise ApiError("this model has no chat format: use /v1/completions", "messages")
        parallel = True if req.parallel_tool_calls is None else req.parallel_tool_calls
        try:
            return plan_chat(self.model, req.messages, req.tools, req.tool_choice, parallel)
        except (Error, TypeError, ValueError, UnicodeError) as e:
            m = re.match(r"tools|tool_choice|parallel_tool_calls", str(e))
            raise ApiError(str(e), m.group(0) if m else "messages") from None

    def score_prompts(self, items: list[Any]) -> list[list[int]]:
        """/score's input_string: strings (plain completions), one conversation (role/content messages) or a list
        of conversations, answered in the model's chat format."""
        if all(isinstance(x, str) for x in items):
            return [self.tokenize(x) for x in items]
        convs = [items] if all(isinstance(x, dict) for x in items) else items
        if not all(isinstance(c, list) and c and all(isinstance(m, dict) for m in c) for c in convs):
            raise ApiError("input_string must hold strings, one conversation (a list of role/content messages) or "
                           "a list of conversations", "input_string")
        if self.chat_format is None:
            raise ApiError("this model has no chat format: send strings", "input_string")
        try:
            return [plan_chat(self.model, c).prompt_ids for c in convs]
        except (Error, TypeError, ValueError, UnicodeError) as e:
            raise ApiError(f"input_string: {e}", "input_string") from None

    def generation(self, ids: list[int], options: dict[str, Any], chat: bool, index: int) -> Generation:
        if self.config.speculative is not None:  # the server's speculative decoding (serve --speculative)
            options = {**options, "speculative": self.config.speculative,
                       "num_speculative_tokens": self.config.num_speculative_tokens}
        try:
            return self.model.generation(ids, chat=chat, index=index, **options)
        except (Error, TypeError, ValueError) as e:
            m = re.match(r"[a-z_]+", str(e))
            raise ApiError(str(e), m.group(0) if m else None) from None

    # -------------------------------------------------------------- running jobs
    def submit(self, prompts: list[list[int]], options: dict[str, Any], n: int, chat: bool
               ) -> tuple[asyncio.Queue, list[Job]]:
        """Build every choice's generation (all validated first), then queue them together."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def sink(event: Event) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        jobs = []
        seed = options.get("seed")
        for p, ids in enumerate(prompts):
            for i in range(n):
                k = p * n + i
                opts = options if seed is None or k == 0 else {**options, "seed": (seed + k) % (1 << 64)}
                jobs.append(Job(self.generation(ids, opts, chat, k), sink, index=k, prompt_index=p))
        try:
            self.scheduler.submit(jobs)
        except QueueFullError as e:
            raise ApiError(str(e), code="queue_full", status=429) from None
        except ShuttingDownError as e:
            raise ApiError(str(e), code="unavailable", status=503) from None
        return queue, jobs

    def cancel(self, jobs: list[Job]) -> None:
        for j in jobs:
            j.cancel()  # a no-op for finished jobs; frees the slots of the rest within one step
        self.scheduler.wake()

    async def collect(self, queue: asyncio.Queue, jobs: list[Job], disconnected: asyncio.Future
                      ) -> list[dict[str, Any]]:
        """Wait for every job; per choice {"text", "tokens", "logprobs", "finish_reason", token counts}.

        `disconnected` completes when the client goes away: the jobs are cancelled at once.
        """
        out = [{"text": [], "tokens": [], "logprobs": [], "finish_reason": None, "prompt_tokens": j.n_prompt,
                "completion_tokens": 0, "prompt_index": j.prompt_index} for j in jobs]
        left = len(jobs)
        try:
            while left:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, disconnected}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()  # the client left: nobody is waiting for the answer
                    raise ApiError("the client closed the request", code="client_closed", status=499)
                ev = getter.result()
                if isinstance(ev, TextEvent):
                    out[ev.index]["text"].append(ev.text)
                    out[ev.index]["tokens"] += ev.tokens
                    out[ev.index]["logprobs"] += ev.logprobs or []
                elif isinstance(ev, DoneEvent):
                    out[ev.index]["finish_reason"], out[ev.index]["completion_tokens"] = ev.finish_reason, ev.n_completion
                    left -= 1
                else:
                    raise ApiError(ev.message, code="generation_failed", status=500)
        finally:
            self.cancel(jobs)
        for o in out:
            o["text"] = "".join(o["text"])
        return out


def usage(results: list[dict[str, Any]]) -> dict[str, int]:
    prompt = sum({r["prompt_index"]: r["prompt_tokens"] for r in results}.values())  # n choices share a prompt
    completion = sum(r["completion_tokens"] for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
