"""The generation core: the step API (Model.step, Session.truncate), the slot pool, the Decoder and its plug-in
points (processors, forced tokens), results with details, and the rule that no module reaches into another's
private members."""

from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest
from conftest import tiny_config

import llama32_native as l32
from llama32_native.processors import LogitsProcessor

GREEDY = dict(do_sample=False)


@pytest.fixture(scope="module")
def model() -> l32.Model:
    return l32.Model.random(tiny_config(n_vocab=300), quant="f32", seed=3, threads=1, context_length=256,
                            max_sequences=4)


def prompt(seed: int, n: int = 12) -> list[int]:
    return [int(x) for x in np.random.default_rng(seed).integers(3, 300, n)]


def test_step_batches_any_mix_like_separate_feeds(model):
    a, b, c = prompt(1), prompt(2, 5), prompt(3, 1)
    want = []
    for ids in (a, b, c):
        with model.session() as s:
            want.append(s.feed(ids, all_logits=True))
    sessions = [model.session() for _ in range(3)]
    try:
        outs = model.step(sessions, [a, b, c], n_logits=[len(a), 2, 1])
        assert [o.shape[0] for o in outs] == [len(a), 2, 1]
        np.testing.assert_allclose(outs[0], want[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(outs[1], want[1][-2:], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(outs[2], want[2][-1:], rtol=1e-5, atol=1e-5)
        assert [s.n_past for s in sessions] == [len(a), len(b), len(c)]
    finally:
        for s in sessions:
            s.close()


def test_truncate_rolls_back_exactly(model):
    ids = prompt(4, 20)
    with model.session() as s:
        full = s.feed(ids, all_logits=True)
        s.truncate(11)
        assert s.n_past == 11 and s.tokens == ids[:11]
        again = s.feed(ids[11:], all_logits=True)
        np.testing.assert_allclose(again, full[11:], rtol=1e-5, atol=1e-5)
        with pytest.raises(l32.InvalidArgumentError):
            s.truncate(s.n_past + 1)
        with pytest.raises(l32.InvalidArgumentError):
            s.truncate(-1)


def test_invalid_step_changes_nothing(model):
    with model.session() as s, model.session() as t:
        s.feed(prompt(5))
        before = s.tokens
        for bad in (lambda: model.step([s, t], [[1], [10**6]]), lambda: model.step([s, s], [[1], [2]]),
                    lambda: model.step([s], [[1, 2]], n_logits=3), lambda: model.step([s, t], [[1]]),
                    lambda: model.step([s], [[1] * 300]), lambda: s.feed_reusing_prefix([])):
            with pytest.raises(l32.Error):
                bad()
            assert s.tokens == before and t.n_past == 0


def test_slot_pool_exhaustion_is_a_named_error(model):
    sessions = [model.session() for _ in range(model.max_sequences)]
    try:
        assert model.free_slots == 0
        with pytest.raises(l32.NoFreeSlotError):
            model.session()
        with pytest.raises(l32.NoFreeSlotError):
            model.complete(prompt(6), max_new_tokens=2, **GREEDY)
    finally:
        for s in sessions:
            s.close()
    assert model.free_slots == model.max_sequences


def test_prefix_is_reused_across_calls(model, monkeypatch):
    base = prompt(7, 40)
    model.complete(base, max_new_tokens=2, **GREEDY)
    rows = []
    forward = model._forward

    def counting(tokens, *a):
        rows.append(len(tokens))
        return forward(tokens, *a)

    monkeypatch.setattr(model, "_forward", counting)
    out = model.complete(base + [5, 6], max_new_tokens=3, **GREEDY)
    assert rows[0] <= 4, f"the cached prefix was recomputed: first forward had {rows[0]} rows"
    monkeypatch.undo()
    fresh = l32.Model.random(tiny_config(n_vocab=300), quant="f32", seed=3, threads=1, context_length=256)
    assert out.tokens == fresh.complete(base + [5, 6], max_new_tokens=3, **GREEDY).tokens


def test_batched_decoder_matches_single_greedy(model):
    prompts = [prompt(10 + i, 3 + 4 * i) for i in range(6)]  # more prompts than slots: admitted as slots free
    single = [model.complete(p, max_new_tokens=9, **GREEDY).tokens for p in prompts]
    batched = model.complete_batch(prompts, max_new_tokens=9, **GREEDY)
    assert [r.tokens for r in batched] == single
    assert all(r.finish_reason == "length" and r.n_generated == 9 and r.n_prompt == len(p)
               for r, p in zip(batched, prompts))


def test_complete_batch_returns_errors_per_row(model):
    rs = model.complete_batch([prompt(20), [1] * 300, prompt(21)], max_new_tokens=3, errors="return", **GREEDY)
    assert [r.finish_reason for r in rs] == ["length", "error", "length"]
    assert "context" in rs[1].error
    with pytest.raises(l32.ContextLengthError):
        model.complete_batch([prompt(20), [1] * 300], max_new_tokens=3, **GREEDY)


class Forbid(LogitsProcessor):
    def __init__(self, banned: set[int]):
        self.banned = banned

    def __call__(self, logits, generated):
        logits[list(self.banned)] = -np.inf
        return logits


class ForceAfter(LogitsProcessor):
    """After the first sampled token, forces a fixed run of tokens, then lets sampling go on."""

    def __init__(self, run: list[int]):
        self.run, self.seen = run, []

    def accept(self, token):
        self.seen.append(token)

    def forced(self):
        if len(self.seen) == 1:
            return list(self.run)
        return []


def test_processors_mask_and_force(model):
    p = prompt(30)
    plain = model.complete(p, max_new_tokens=6, **GREEDY).tokens
    masked = model.complete(p, max_new_tokens=6, logits_processors=[Forbid({plain[0]})], **GREEDY).tokens
    assert masked[0] != plain[0]
    forced = model.complete(p, max_new_tokens=6, logits_processors=[ForceAfter([7, 8, 9])], **GREEDY).tokens
    assert forced[:4] == [plain[0], 7, 8, 9] and len(forced) == 6
    # The continuation after the forced run is what the model says after those tokens.
    with model.session() as s:
        nxt = int(np.argmax(s.feed(p + [plain[0], 7, 8, 9])))
    assert forced[4] == nxt


def test_logprobs_are_log_softmax_of_the_logits(model):
    p = prompt(31)
    r = model.complete(p, max_new_tokens=4, logprobs=True, top_logprobs=3, **GREEDY)
    logits = model.logits(p + r.tokens[:-1])[len(p) - 1:]
    for lp, row in zip(r.logprobs, logits):
        ref = row.astype(np.float64) - np.log(np.exp(row.astype(np.float64) - row.max()).sum()) - row.max()
        assert lp.logprob == pytest.approx(ref[lp.token], abs=1e-4)
        assert [t for t, _ in lp.top] == list(np.argsort(-ref, kind="stable")[:3])


def test_openai_spelling_gets_a_hint(model):
    with pytest.raises(TypeError, match="max_new_tokens"):
        model.generate(prompt(1), max_tokens=3)
    with pytest.raises(l32.Error):
        model.generate(prompt(1), top_logprobs=2)


PACKAGE = pathlib.Path(l32.__file__).parent


def _defined_private_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if n.startswith("_")}


def test_no_module_reaches_into_another_modules_private_members():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        own = _defined_private_names(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
                continue
            if node.attr in own:
                continue
            base = node.value
            if isinstance(base, ast.Name) and base.id in ("self", "cls", "_core", "sys", "os"):
                continue
            offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: .{node.attr}")
    assert not offenders, "private members used across modules:\n" + "\n".join(offenders)
