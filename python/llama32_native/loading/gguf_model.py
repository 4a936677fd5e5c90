"""A .gguf file as a self-contained model: tensors and config (gguf.py), tokenizer and chat format from metadata.

Chat formats stay hard-coded (chat.py); the file's Jinja template is only *recognized*, never rendered.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import GGUFFormatError
from . import Checkpoint

# tokenizer.ggml.token_type values (llama.cpp's llama_token_type)
_CONTROL, _USER_DEFINED = 3, 4
_KNOWN_PRE = {"llama-bpe": "LLAMA3_PATTERN", "llama3": "LLAMA3_PATTERN", "smollm": "SMOLLM_PATTERN",
              "gpt2": "GPT2_PATTERN", "default": "GPT2_PATTERN"}


def tokenizer_from_gguf(meta: dict[str, Any], n_vocab: int) -> Any:
    """A Tokenizer from `tokenizer.ggml.*` (byte-level BPE vocabularies only); None when the file has none."""
    from .. import tokenizer as tk

    tokens = meta.get("tokenizer.ggml.tokens")
    if tokens is None:
        return None
    model = meta.get("tokenizer.ggml.model", "gpt2")
    if model != "gpt2":
        raise GGUFFormatError(f"tokenizer.ggml.model={model!r} is not supported (only byte-level BPE, 'gpt2')")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise GGUFFormatError("tokenizer.ggml.tokens must be an array of strings")
    types = meta.get("tokenizer.ggml.token_type")
    types = np.asarray(types, dtype=np.int64) if types is not None else np.ones(len(tokens), np.int64)
    if types.shape != (len(tokens),):
        raise GGUFFormatError("tokenizer.ggml.token_type must have one entry per token")
    pre = meta.get("tokenizer.ggml.pre", "default")
    pattern = getattr(tk, _KNOWN_PRE.get(pre, "GPT2_PATTERN"))
    specials: dict[str, int] = {}
    pieces: list[bytes | None] = []
    for i, (text, ty) in enumerate(zip(tokens, types)):
        if ty in (_CONTROL, _USER_DEFINED):
            specials.setdefault(text, i)
            pieces.append(None)
            continue
        try:
            pieces.append(tk.bytes_from_byte_level(text))
        except (ValueError, KeyError):
            raise GGUFFormatError(f"tokenizer token {i} is not a byte-level string") from None
    bos = meta.get("tokenizer.ggml.bos_token_id")
    eos = meta.get("tokenizer.ggml.eos_token_id")
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", pre in ("llama-bpe", "llama3")))
    return tk.Tokenizer.from_vocab(pieces, specials, pattern, None if bos is None else int(bos),
                                   None if eos is None else int(eos), None, n_vocab=n_vocab,
                                   add_bos=add_bos, name="gguf")


def chat_format_from_template(tokenizer: Any, template: Any) -> Any:
    """Recognize (never render) the file's chat template: Llama 3 headers or ChatML."""
    from .. import chat

    if tokenizer is None or not isinstance(template, str):
        return chat.chat_format_for(tokenizer) if tokenizer is not None else None
    if "<|start_header_id|>" in template:
        return chat.Llama3ChatFormat(tokenizer)
    if "<|im_start|>" in template:
        default_system = chat.SMOLLM2_DEFAULT_SYSTEM if chat.SMOLLM2_DEFAULT_SYSTEM in template else None
        return chat.ChatMLFormat(tokenizer, default_system=default_system)
    return chat.chat_format_for(tokenizer)


def open_gguf(path: str) -> Checkpoint:
    from .gguf import load_gguf

    config, tensors, meta = load_gguf(path)
    tok = tokenizer_from_gguf(meta, config.n_vocab)
    fmt = chat_format_from_template(tok, meta.get("tokenizer.chat_template"))
    file_plan = {name: "f32" if t.kind == "f16" else t.kind for name, t in tensors.items() if len(t.shape) == 2}
    return Checkpoint(config, tensors, tok, fmt, file_plan=file_plan)
