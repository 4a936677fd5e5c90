"""open_checkpoint: the one entry that recognizes a path (HF directory, GGUF, safetensors, saved model) and opens it.

Contract: formats are told apart by their first bytes; whatever the path is, the answer is a Checkpoint or a
ModelLoadError subclass (ModelNotFoundError for a missing path) naming the path and what it looks like.
"""

from __future__ import annotations

import os
import stat

from ..errors import InvalidArgumentTypeError, ModelLoadError, ModelNotFoundError
from ..files import PICKLE_SUFFIXES, describe_content, detect_format, os_error, sniff
from . import Checkpoint


def open_checkpoint(path: str | os.PathLike, check_tensors: bool = False) -> Checkpoint:
    """Open a model directory or file, recognizing the format by its content, never by its name."""
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidArgumentTypeError(f"a model path must be a str or os.PathLike, got {type(path).__name__}")
    p = os.fspath(path)
    if not isinstance(p, str):
        raise InvalidArgumentTypeError(f"a model path must be text, got {type(p).__name__}")
    try:
        st = os.stat(p)
    except OSError as e:
        raise os_error(p, e) from None
    except ValueError as e:  # an embedded NUL
        raise ModelNotFoundError(f"{p!r}: invalid path ({e})") from None
    if stat.S_ISDIR(st.st_mode):
        return _open_hf(p, check_tensors)
    if not stat.S_ISREG(st.st_mode):  # a FIFO, device or socket would block or never end: never read one
        raise ModelLoadError(f"{p}: not a regular file or directory (mode {stat.filemode(st.st_mode)})")
    if p.endswith(PICKLE_SUFFIXES):
        raise ModelLoadError(f"{p}: pickle checkpoints are never loaded (they can run code); convert to safetensors")
    head = sniff(p)
    fmt = detect_format(head, st.st_size)
    if fmt == "gguf":
        from .gguf_model import open_gguf

        return open_gguf(p)
    if fmt == "json":  # model.safetensors.index.json
        return _open_hf(p, check_tensors)
    if fmt != "safetensors":
        expected = {".gguf": "a GGUF", ".safetensors": "a safetensors", ".json": "a JSON"}.get(
            os.path.splitext(p)[1].lower(), "a model")
        raise ModelLoadError(
            f"{p}: not {expected} file (it looks like {describe_content(head)}); expected a GGUF file, a safetensors "
            "file (a Hugging Face checkpoint or one written by Model.save) or a model directory"
        )
    from .native import is_native_file, load_native
    from .safetensors import SafetensorsFile

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
