"""Batched generation: several sequences decoded together, one forward (one weight read) per step."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from .errors import ContextLengthError, NumericalError

MAX_PREFILL_ROWS = 2048  # rows per forward while prefilling several prompts together


def _prefill(model: Any, sessions: list, prompts: list[list[int]]) -> list[np.ndarray]:
    """Feed every prompt, packing rows of several sequences into shared forwards; last-token logits of each."""
    rows_tok, rows_pos, rows_seq, owners = [], [], [], []
    last = [None] * len(prompts)

    def flush() -> None:
        if not rows_tok:
            return
        out_rows = [i for i, o in enumerate(owners) if o is not None]
        logits = model._forward(np.asarray(rows_tok, np.int32), np.asarray(rows_pos, np.int32),
                                np.asarray(rows_seq, np.int32), np.asarray(out_rows, np.int32))
        for k, i in enumerate(out_rows):
            last[owners[i]] = logits[k]
        rows_tok.clear(); rows_pos.clear(); rows_seq.clear(); owners.clear()

    for j, (s, ids) in enumerate(zip(sessions, prompts)):
        for p, t in enumerate(ids):
            rows_tok.append(t)
            rows_pos.append(s.n_past + p)
            rows_seq.append(s._slot)
            owners.append(j if p == len(ids) - 1 else None)
            if len(rows_tok) == MAX_PREFILL_ROWS:
                flush()
        s._tokens.extend(ids)
    flush()
    return last


def generate_batch(model: Any, prompts: Sequence[Any], **sampling: Any) -> list[str]:
    from .sampling import Sampler, SamplingParams
    from .streaming import TextStream

    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
        raise TypeError("prompts must be a list of prompts (strings or token-id lists)")
    params = SamplingParams(**sampling)
    ids_list = [model._prompt_ids(p) for p in prompts]
    n_ctx = model.context_length
    for ids in ids_list:
        if len(ids) + params.max_new_tokens > n_ctx:
            raise ContextLengthError(
                f"a prompt of {len(ids)} tokens + max_new_tokens={params.max_new_tokens} exceeds the context "
                f"of {n_ctx}", n_prompt=len(ids), max_new_tokens=params.max_new_tokens, n_ctx=n_ctx)
    tokenizer = model._require_tokenizer()
    stop_ids = model._stop_ids()
    results: list[str] = [""] * len(ids_list)
    group = max(1, len(model._free_slots))
    for g0 in range(0, len(ids_list), group):
        idx = list(range(g0, min(len(ids_list), g0 + group)))
        sessions = [model.session() for _ in idx]
        try:
            logits = _prefill(model, sessions, [ids_list[i] for i in idx])
            samplers = []
            for i in idx:  # each sequence its own stream of random numbers, reproducible from one seed
                p = params if params.seed is None else dataclasses.replace(params, seed=(params.seed + i) % (1 << 64))
                samplers.append(Sampler(p, model.config.n_vocab))
            streams = [TextStream(tokenizer, params.stop_strings) for _ in idx]
            history = [list(ids_list[i]) for i in idx]
            generated: list[list[int]] = [[] for _ in idx]
            active = list(range(len(idx)))
            texts = [""] * len(idx)
            for step in range(params.max_new_tokens):
                still = []
                for a in active:
                    tok = samplers[a].sample(logits[a], history[a])
                    if tok in stop_ids:
                        continue
                    history[a].append(tok)
                    generated[a].append(tok)
                    texts[a] += streams[a].push(tok)
                    if streams[a].stopped:
                        continue
                    still.append(a)
                active = still
                if not active or step + 1 == params.max_new_tokens:
                    break
                toks = np.asarray([generated[a][-1] for a in active], np.int32)
                pos = np.asarray([sessions[a].n_past for a in active], np.int32)
                seq = np.asarray([sessions[a]._slot for a in active], np.int32)
                out = model._forward(toks, pos, seq, np.arange(len(active), dtype=np.int32))
                if not np.isfinite(out).all():
                    raise NumericalError("the forward pass produced non-finite logits")
                for k, a in enumerate(active):
                    sessions[a]._tokens.append(int(toks[k]))
                    logits[a] = out[k]
            for k, i in enumerate(idx):
                results[i] = texts[k] + streams[k].finish()
        finally:
            for s in sessions:
                s.close()
    return results
