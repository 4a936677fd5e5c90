"""open_checkpoint: the one entry that recognizes a path (HF directory, .gguf, saved model) and opens it."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

from ..config import LlamaConfig
from ..errors import ModelLoadError
from . import Tensor


@dataclasses.dataclass
class Checkpoint:
    config: LlamaConfig
    tensors: dict[str, Tensor]
    tokenizer: Any = None
    chat_format: Any = None
    plan: dict[str, str] | None = None  # in-memory types fixed by the file (saved models)
    quant: str | None = None
    closers: list[Callable[[], None]] = dataclasses.field(default_factory=list)

    def close(self) -> None:
        for c in self.closers:
            c()
        self.closers.clear()


_PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".pkl", ".ckpt")


def open_checkpoint(path: str | os.PathLike, check_tensors: bool = False) -> Checkpoint:
    p = os.fspath(path)
    if not os.path.exists(p):
        raise ModelLoadError(f"{p}: no such file or directory")
    if os.path.isdir(p):
        return _open_hf(p, check_tensors)
    if not os.path.isfile(p):  # a FIFO, device or socket would block or never end: never read one
        raise ModelLoadError(f"{p}: not a regular file or directory")
    if p.endswith(".json"):  # model.safetensors.index.json
        return _open_hf(p, check_tensors)
    if p.endswith(_PICKLE_SUFFIXES):
        raise ModelLoadError(f"{p}: pickle checkpoints are never loaded (they can run code); convert to safetensors")
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        from .gguf_model import open_gguf

        return open_gguf(p)
    from .safetensors import SafetensorsFile
    from .native import is_native_file, load_native

    sf = SafetensorsFile(p)
    if is_native_file(sf):
        try:
            cfg, tensors, plan, quant, tok, chat = load_native(sf)
        except BaseException:
            sf.close()
            raise
        return Checkpoint(cfg, tensors, tok, chat, plan, quant, [sf.close])
    sf.close()
    return _open_hf(p, check_tensors)


def _open_hf(p: str, check_tensors: bool) -> Checkpoint:
    from ..tokenizer import Tokenizer
    from .hf import load_hf_dir

    cfg, tensors, files = load_hf_dir(p, check_tensors=check_tensors)
    directory = p if os.path.isdir(p) else os.path.dirname(os.path.abspath(p))
    try:
        tok = Tokenizer.from_dir(directory, n_vocab=cfg.n_vocab)
    except BaseException:
        for f in files:
            f.close()
        raise
    return Checkpoint(cfg, tensors, tok, None, None, None, [f.close for f in files])
