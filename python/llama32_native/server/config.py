"""Limits and policy of one server: what the CLI's `serve` options and build_app's keywords map onto.

Contract: a ServerConfig validates itself on construction (InvalidArgumentError naming the field); an empty
API key is refused, never taken to mean "no authentication".
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import InvalidArgumentError

__all__ = ["ServerConfig", "LOCAL_HOSTS"]

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclasses.dataclass
class ServerConfig:
    """Limits and policy of one server (the CLI's `serve` options map onto these)."""

    model_name: str = "llama32-native"
    api_key: str | None = None
    max_queue: int = 64  # requests waiting for a slot; beyond this: 429
    max_tokens: int = 4096  # largest max_tokens a request may ask for
    default_max_tokens: int = 256  # when a chat request gives none (completions default to 16, as OpenAI)
    max_prompt_tokens: int | None = None  # None: the context length
    max_body_bytes: int = 1 << 20
    max_n: int = 4  # choices per request
    max_prompts: int = 16  # prompts in one /v1/completions list or /score input_string
    body_timeout_s: float = 30.0  # a body that trickles in slower than this gets 408
    retry_after_s: int = 1
    header_timeout_s: float = 10.0  # a connection must send a whole request head within this, or it is closed
    idle_timeout_s: float = 5.0  # an idle keep-alive connection is closed after this
    max_connections: int = 512  # open connections past this are closed at once (file descriptors stay bounded)
    allowed_hosts: tuple[str, ...] | None = None  # Host header names; None: local names when bound locally
    cors_origins: tuple[str, ...] = ()
    speculative: Any = None  # every generation drafts: None, "ngram" (prompt lookup) or a draft Model
    num_speculative_tokens: int | None = None  # the cap on drafts per forward (None: the library's default)

    def __post_init__(self) -> None:
        if self.speculative is not None or self.num_speculative_tokens is not None:
            from ..speculative import DEFAULT_SPECULATIVE_TOKENS, check_speculative

            k = self.num_speculative_tokens
            check_speculative(self.speculative, DEFAULT_SPECULATIVE_TOKENS if k is None else k)
            if self.speculative is None:
                raise InvalidArgumentError("ServerConfig.num_speculative_tokens needs ServerConfig.speculative")
        for name in ("max_queue", "max_tokens", "default_max_tokens", "max_body_bytes", "max_n", "max_prompts",
                     "max_connections"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidArgumentError(f"ServerConfig.{name} must be a positive integer, got {v!r}")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise InvalidArgumentError(f"ServerConfig.max_prompt_tokens must be positive, got {self.max_prompt_tokens}")
        if self.api_key is not None and not self.api_key.strip():
            raise InvalidArgumentError("ServerConfig.api_key must not be empty (None serves without a key)")
        for name in ("header_timeout_s", "idle_timeout_s", "body_timeout_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 3600:
                raise InvalidArgumentError(f"ServerConfig.{name} must be in (0, 3600] seconds, got {v!r}")
