"""The package's exception hierarchy (docs/ERRORS.md).

Every error a user can provoke with bad files, bad parameters or misuse is one of these.
Tests match on the types, never on the messages.
"""

from __future__ import annotations


class Error(Exception):
    """Root of every exception raised by llama32_native."""


class ModelLoadError(Error, ValueError):
    """Anything wrong with a model file or directory."""


class SafetensorsFormatError(ModelLoadError):
    """A safetensors header, JSON, offset or size violation."""


class GGUFFormatError(ModelLoadError):
    """A malformed or unsupported GGUF file."""


class ConfigError(ModelLoadError):
    """config.json (or GGUF metadata) is inconsistent or out of range."""


class MissingTensorError(ModelLoadError):
    """A tensor the architecture needs is not in the checkpoint."""


class UnexpectedTensorError(ModelLoadError):
    """The checkpoint holds a tensor the architecture does not know."""


class TensorShapeError(ModelLoadError):
    """A tensor's shape disagrees with the config."""


class UnsupportedDTypeError(ModelLoadError):
    """A tensor's dtype cannot be used for this weight."""


class NonFiniteWeightsError(ModelLoadError):
    """NaN or Inf in a weight (only checked with check_tensors=True)."""


class TokenizerError(ModelLoadError):
    """Tokenizer data (tokenizer.json, tokenizer.model, GGUF metadata, a saved file) is malformed or unsafe."""


class ModelNotFoundError(ModelLoadError):
    """A model name, repo id or path cannot be resolved to files on this machine (and cannot be downloaded)."""


class ResourceLimitError(ModelLoadError):
    """Loading would need more memory than the machine (or its cgroup) has; the message states both."""


class InvalidArgumentError(Error, ValueError):
    """An argument has a value out of range or otherwise unusable (raised before any compute)."""


class GrammarError(InvalidArgumentError):
    """A JSON schema, regular expression or grammar that cannot be compiled or uses an unsupported feature."""


class UnknownTokenError(InvalidArgumentError, KeyError):
    """A special-token name the tokenizer does not have (also a KeyError, as a mapping lookup)."""


class InvalidArgumentTypeError(Error, TypeError):
    """An argument has the wrong type (raised before any compute)."""


class ContextLengthError(Error, ValueError):
    """The prompt (plus the tokens to generate) does not fit in the context."""

    def __init__(self, message: str, n_prompt: int = 0, max_new_tokens: int = 0, n_ctx: int = 0):
        super().__init__(message)
        self.n_prompt = n_prompt
        self.max_new_tokens = max_new_tokens
        self.n_ctx = n_ctx


class NumericalError(Error, FloatingPointError):
    """The forward pass produced non-finite logits."""


class ModelClosedError(Error, RuntimeError):
    """The model (or session) was used after close()."""


class NoFreeSlotError(Error, RuntimeError):
    """Every sequence slot of the model is in use (close a session, finish a generator, or raise max_sequences)."""


class EngineError(Error, RuntimeError):
    """The C++ engine refused an operation (the message says why)."""


class GenerationError(Error, RuntimeError):
    """A generation could not go on (a constraint that cannot be satisfied, a failed draft model, ...)."""


__all__ = [
    "Error",
    "ModelLoadError",
    "SafetensorsFormatError",
    "GGUFFormatError",
    "ConfigError",
    "MissingTensorError",
    "UnexpectedTensorError",
    "TensorShapeError",
    "UnsupportedDTypeError",
    "NonFiniteWeightsError",
    "TokenizerError",
    "ModelNotFoundError",
    "ResourceLimitError",
    "InvalidArgumentError",
    "GrammarError",
    "UnknownTokenError",
    "InvalidArgumentTypeError",
    "ContextLengthError",
    "NumericalError",
    "ModelClosedError",
    "NoFreeSlotError",
    "EngineError",
    "GenerationError",
]
