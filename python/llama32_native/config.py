"""LlamaConfig: the model's hyper-parameters in the package's one vocabulary.

Hugging Face names are mapped here and nowhere else (docs/MODEL.md, "Configuration"). Every field is validated
once, at construction, so the C++ core never sees an inconsistent shape.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import ConfigError, InvalidArgumentError, InvalidArgumentTypeError
from .files import parse_json, read_regular

# A config.json larger than this is not a config (docs/ERRORS.md, "Malformed files").
MAX_CONFIG_BYTES = 1 << 20
MAX_POSITIONS = 1 << 20  # far above Llama 3.2's 131072; guards the KV-cache arithmetic
RMS_EPS_RANGE = (1e-12, 1e-1)  # real models use 1e-6..1e-5


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """llama3 frequency scaling (docs/MODEL.md, "RoPE")."""

    factor: float = 32.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int
    head_dim: int = 0  # 0: n_embd // n_head
    n_ctx: int = 131072  # max_position_embeddings
    rope_theta: float = 500000.0
    rms_eps: float = 1e-5
    rope_scaling: RopeScaling | None = RopeScaling()
    # GGUF stores llama3 scaling as per-pair divisors (`rope_freqs.weight`); when present
    # they replace rope_scaling (docs/MODEL.md, "RoPE").
    rope_freq_divisors: tuple[float, ...] | None = None
    tie_word_embeddings: bool = True
    bos_token_id: int = 128000
    eos_token_ids: tuple[int, ...] = (128001, 128008, 128009)

    def __post_init__(self) -> None:
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (self.n_embd, self.n_head))
        if self.head_dim == 0 and ints and self.n_head > 0:  # other cases are refused by validate()
            object.__setattr__(self, "head_dim", self.n_embd // self.n_head)
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        def need_int(name: str, lo: int, hi: int) -> int:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"config field {name} must be an integer, got {v!r}")
            if not lo <= v <= hi:
                raise ConfigError(f"config field {name}={v} is out of range [{lo}, {hi}]")
            return v

        need_int("n_embd", 1, 1 << 16)
        need_int("n_layer", 1, 1024)
        need_int("n_head", 1, 1024)
        need_int("n_head_kv", 1, 1024)
        need_int("head_dim", 2, 1024)
        need_int("n_ff", 1, 1 << 18)
        need_int("n_vocab", 1, 1 << 22)
        need_int("n_ctx", 1, MAX_POSITIONS)
        if self.n_head % self.n_head_kv != 0:
            raise ConfigError(
                f"n_head={self.n_head} is not a multiple of n_head_kv={self.n_head_kv} (GQA needs it)"
            )
        if self.head_dim % 2 != 0:
            raise ConfigError(f"head_dim={self.head_dim} must be even for RoPE")
        for name in ("rope_theta", "rms_eps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ConfigError(f"config field {name} must be a positive finite number, got {v!r}")
        if not RMS_EPS_RANGE[0] <= self.rms_eps <= RMS_EPS_RANGE[1]:
            raise ConfigError(
                f"config field rms_eps={self.rms_eps!r} is outside [{RMS_EPS_RANGE[0]}, {RMS_EPS_RANGE[1]}] "
                "(Llama uses 1e-5; a value outside this range makes the norms meaningless in float32)"
            )
        if self.rope_theta <= 1.0:
            raise ConfigError(f"rope_theta={self.rope_theta} must be > 1")
        s = self.rope_scaling
        if s is not None:
            for name in ("factor", "low_freq_factor", "high_freq_factor"):
                v = getattr(s, name)
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                    raise ConfigError(f"rope_scaling.{name} must be a positive finite number, got {v!r}")
            if not s.high_freq_factor > s.low_freq_factor:
                raise ConfigError(
                    f"rope_scaling.high_freq_factor={s.high_freq_factor} must exceed "
                    f"low_freq_factor={s.low_freq_factor}"
                )
            v = s.original_max_position_embeddings
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"rope_scaling.original_max_position_embeddings must be a positive int, got {v!r}")
        if self.rope_freq_divisors is not None:
            d = self.rope_freq_divisors
            if len(d) != self.head_dim // 2 or not all(math.isfinite(x) and x > 0 for x in d):
                raise ConfigError(
                    f"rope frequency divisors must be {self.head_dim // 2} positive numbers, got {len(d)}"
                )
        for t in (self.bos_token_id, *self.eos_token_ids):
            if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t:
                raise ConfigError(f"special token id {t!r} is not a non-negative integer")

    # ------------------------------------------------------------------ derived
    @property
    def n_group(self) -> int:
        """Query heads per KV head."""
        return self.n_head // self.n_head_kv

    @property
    def q_dim(self) -> int:
        return self.n_head * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_head_kv * self.head_dim

    def rope_inv_freq(self) -> np.ndarray:
        """Per-pair angular frequencies ω'_i (float64, length head_dim/2), docs/MODEL.md, "RoPE".

        The base frequencies are computed in float32 as Meta and Hugging Face do.
        """
        hd = self.head_dim
        exponent = np.arange(0, hd, 2, dtype=np.float32) / np.float32(hd)
        inv = (1.0 / np.power(np.float32(self.rope_theta), exponent)).astype(np.float32)
        inv = inv.astype(np.float64)
        if self.rope_freq_divisors is not None:
            return inv / np.asarray(self.rope_freq_divisors, dtype=np.float64)
        s = self.rope_scaling
        if s is None:
            return inv
        old = float(s.original_max_position_embeddings)
        low_wavelen = old / s.low_freq_factor
        high_wavelen = old / s.high_freq_factor
        wavelen = 2.0 * math.pi / inv
        smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
        blended = (1.0 - smooth) * inv / s.factor + smooth * inv
        out = np.where(wavelen < high_wavelen, inv, np.where(wavelen > low_wavelen, inv / s.factor, blended))
        return out

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if self.rope_freq_divisors is not None:
            d["rope_freq_divisors"] = list(self.rope_freq_divisors)
        d["eos_token_ids"] = list(self.eos_token_ids)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LlamaConfig:
        """Inverse of to_dict (our own vocabulary)."""
        try:
            kw = dict(d)
            rs = kw.get("rope_scaling")
            kw["rope_scaling"] = RopeScaling(**rs) if rs is not None else None
            if kw.get("rope_freq_divisors") is not None:
                kw["rope_freq_divisors"] = tuple(float(x) for x in kw["rope_freq_divisors"])
            kw["eos_token_ids"] = tuple(kw.get("eos_token_ids", ()))
            return cls(**kw)
        except (TypeError, ValueError, OverflowError) as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"invalid config: {e}") from None

    @classmethod
    def from_hf_dict(cls, d: Mapping[str, Any], *, source: str = "config.json") -> LlamaConfig:
        """Map a Hugging Face `config.json` dict (classic or transformers-v5 layout)."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"{source}: expected a JSON object, got {type(d).__name__}")

        def get(key: str, default: Any = KeyError) -> Any:
            if key in d and d[key] is not None:
                return d[key]
            if default is KeyError:
                raise ConfigError(f"{source}: missing required field {key!r}")
            return default

        arch = d.get("model_type")
        if arch is not None and arch != "llama":
            raise ConfigError(f"{source}: model_type {arch!r} is not 'llama'")
        act = d.get("hidden_act", "silu")
        if act != "silu":
            raise ConfigError(f"{source}: hidden_act {act!r} is not supported (only 'silu')")
        for key in ("attention_bias", "mlp_bias"):
            if d.get(key):
                raise ConfigError(f"{source}: {key}=true is not supported by Llama 3.2")

        n_embd = get("hidden_size")
        n_head = get("num_attention_heads")
        n_head_kv = get("num_key_value_heads", n_head)
        head_dim = d.get("head_dim")
        if head_dim is None:
            if not isinstance(n_embd, int) or not isinstance(n_head, int) or n_head <= 0:
                raise ConfigError(f"{source}: hidden_size/num_attention_heads must be positive integers")
            if n_embd % n_head != 0:
                raise ConfigError(
                    f"{source}: hidden_size={n_embd} is not divisible by num_attention_heads={n_head}"
                )
            head_dim = n_embd // n_head

        # rope: classic (rope_theta + rope_scaling) or v5 (rope_parameters incl. rope_theta)
        rope_params = d.get("rope_parameters")
        scaling_raw = d.get("rope_scaling")
        theta = d.get("rope_theta")
        if isinstance(rope_params, Mapping):
            theta = rope_params.get("rope_theta", theta)
            if scaling_raw is None:
                scaling_raw = rope_params
        if theta is None:
            theta = 10000.0
        scaling = None
        if scaling_raw is not None:
            if not isinstance(scaling_raw, Mapping):
                raise ConfigError(f"{source}: rope_scaling must be an object or null")
            rtype = scaling_raw.get("rope_type", scaling_raw.get("type", "default"))
            if rtype == "llama3":
                if "factor" not in scaling_raw:
                    raise ConfigError(f"{source}: llama3 rope_scaling has no 'factor'")
                # Values pass through unconverted: validate() insists on real numbers and an integer length, so
                # "8192", 1.9 or 1e999 are refused rather than coerced.
                scaling = RopeScaling(
                    factor=scaling_raw["factor"],
                    low_freq_factor=scaling_raw.get("low_freq_factor", 1.0),
                    high_freq_factor=scaling_raw.get("high_freq_factor", 4.0),
                    original_max_position_embeddings=scaling_raw.get("original_max_position_embeddings", 8192),
                )
            elif rtype != "default":
                raise ConfigError(f"{source}: unsupported rope_type {rtype!r} (expected 'llama3' or none)")

        eos = get("eos_token_id", 128001)
        eos_ids = tuple(eos) if isinstance(eos, (list, tuple)) else (eos,)
        return cls(
            n_embd=n_embd,
            n_layer=get("num_hidden_layers"),
            n_head=n_head,
            n_head_kv=n_head_kv,
            head_dim=head_dim,
            n_ff=get("intermediate_size"),
            n_vocab=get("vocab_size"),
            n_ctx=get("max_position_embeddings", 131072),
            rope_theta=theta,
            rms_eps=get("rms_norm_eps", 1e-5),
            rope_scaling=scaling,
            tie_word_embeddings=bool(get("tie_word_embeddings", False)),
            bos_token_id=get("bos_token_id", 128000),
            eos_token_ids=eos_ids,
        )

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> LlamaConfig:
        path = os.fspath(path)
        raw = read_regular(path, MAX_CONFIG_BYTES, "config", big_cls=ConfigError)  # unreadable: ModelLoadError
        return cls.from_hf_dict(parse_json(raw, f"config {path}", ConfigError), source=path)

    @classmethod
    def preset(cls, name: str) -> LlamaConfig:
        if not isinstance(name, str):
            raise InvalidArgumentTypeError(f"a preset name must be a str, got {type(name).__name__}")
        try:
            return PRESETS[name]
        except KeyError:
            raise InvalidArgumentError(f"unknown preset {name!r}; known: {sorted(PRESETS)}") from None


# The official Llama 3.2 shapes (docs/MODEL.md, "Configuration"). The 3B is hidden 3072, 28 layers, 24 heads,
# 8 KV heads, head_dim 128 — not the 2048/26/6 of one public spec sheet.
PRESETS: dict[str, LlamaConfig] = {
    "llama-3.2-1b": LlamaConfig(
        n_embd=2048, n_layer=16, n_head=32, n_head_kv=8, head_dim=64, n_ff=8192, n_vocab=128256
    ),
    "llama-3.2-3b": LlamaConfig(
        n_embd=3072, n_layer=28, n_head=24, n_head_kv=8, head_dim=128, n_ff=8192, n_vocab=128256
    ),
}
