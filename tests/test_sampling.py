"""Sampler tests: empirical distributions on tiny known logits against a full-sort reference
(temperature, top-k, top-p, min-p, repetition penalty), big-vocabulary candidate cuts, seeded
determinism, greedy, non-finite logits, and SamplingParams validation (docs/ERRORS.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from llama32_native.errors import NumericalError
from llama32_native.sampling import Sampler, SamplingParams, normalize_stop

N_DRAWS = 20_000


def reference_probs(logits: np.ndarray, p: SamplingParams, history: list[int] = ()) -> np.ndarray:  # type: ignore[assignment]
    """Plain full-sort implementation of the documented semantics (float64)."""
    x = logits.astype(np.float64).copy()
    for i in set(history):
        x[i] = x[i] / p.repetition_penalty if x[i] > 0 else x[i] * p.repetition_penalty
    if p.greedy:
        out = np.zeros_like(x)
        out[np.argmax(x)] = 1.0
        return out
    probs = np.exp((x - x.max()) / p.temperature)
    if p.top_k:
        probs[np.argsort(-x, kind="stable")[p.top_k :]] = 0.0
    probs /= probs.sum()
    if p.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        ps = probs[order]
        removed = order[np.cumsum(ps) - ps > p.top_p]
        probs[removed] = 0.0
    if p.min_p > 0.0:
        probs[probs < p.min_p * probs.max()] = 0.0
    return probs / probs.sum()


def empirical(logits: np.ndarray, params: SamplingParams, history: list[int] = (), n: int = N_DRAWS) -> np.ndarray:  # type: ignore[assignment]
    sampler = Sampler(params, logits.size)
    counts = np.zeros(logits.size)
    for _ in range(n):
        counts[sampler.sample(logits, history)] += 1
    return counts / n


def assert_close(freq: np.ndarray, probs: np.ndarray, n: int = N_DRAWS) -> None:
    tol = 4.5 * np.sqrt(probs * (1 - probs) / n) + 2e-3
    assert np.all(np.abs(freq - probs) <= tol), (freq, probs)
    assert np.all(freq[probs == 0] == 0)


LOGITS = np.array([2.0, 1.5, 1.0, 0.2, -0.5, -1.0, -3.0, 0.9], dtype=np.float32)

CASES = {
    "temperature-1": {"temperature": 1.0, "top_p": 1.0},
    "temperature-0.5": {"temperature": 0.5, "top_p": 1.0},
    "temperature-2": {"temperature": 2.0, "top_p": 1.0},
    "top-k-3": {"temperature": 1.0, "top_p": 1.0, "top_k": 3},
    "top-p-0.7": {"temperature": 1.0, "top_p": 0.7},
    "top-p-0.95": {"temperature": 1.0, "top_p": 0.95},
    "min-p-0.2": {"temperature": 1.0, "top_p": 1.0, "min_p": 0.2},
    "top-k-top-p": {"temperature": 0.8, "top_k": 5, "top_p": 0.8},
    "top-p-min-p": {"temperature": 1.2, "top_p": 0.9, "min_p": 0.1},
    "all": {"temperature": 0.7, "top_k": 6, "top_p": 0.9, "min_p": 0.05, "repetition_penalty": 1.3},
    "penalty": {"temperature": 1.0, "top_p": 1.0, "repetition_penalty": 2.0},
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_distribution_matches_reference(name: str) -> None:
    params = SamplingParams(seed=123, **CASES[name])
    history = [0, 0, 5, 3] if params.repetition_penalty != 1.0 else []
    probs = reference_probs(LOGITS, params, history)
    assert_close(empirical(LOGITS, params, history), probs)


def test_known_cut_sets() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    top_p = reference_probs(logits, SamplingParams(temperature=1.0, top_p=0.7))
    assert np.allclose(top_p, [0.625, 0.375, 0, 0])  # Meta: the crossing token (0.3) is kept
    min_p = reference_probs(logits, SamplingParams(temperature=1.0, top_p=1.0, min_p=0.2))
    assert np.count_nonzero(min_p) == 3
    assert_close(empirical(logits, SamplingParams(temperature=1.0, top_p=0.7, seed=1)), top_p)
    assert_close(empirical(logits, SamplingParams(temperature=1.0, top_p=1.0, min_p=0.2, seed=2)), min_p)


def test_repetition_penalty_semantics() -> None:
    logits = np.array([2.0, 1.9, -1.0, -1.1], dtype=np.float32)
    greedy = SamplingParams(do_sample=False, repetition_penalty=2.0)
    s = Sampler(greedy, 4)
    assert s.sample(logits, []) == 0
    assert s.sample(logits, [0]) == 1  # 2.0 / 2 = 1.0 < 1.9
    assert s.sample(logits, [0, 0, 0, 1]) == 0  # a set: 1.0 vs 0.95
    negative = np.array([-1.0, -1.5, -3.0, -4.0], dtype=np.float32)
    assert s.sample(negative, [0]) == 1  # negative logits are multiplied: -2.0 < -1.5
    assert s.sample(negative, np.array([0, 1])) == 0  # ndarray history: -2.0 vs -3.0
    with pytest.raises(ValueError):
        s.sample(logits, [4])
    with pytest.raises(ValueError):
        s.sample(logits, [-1])


def test_greedy_is_argmax() -> None:
    rng = np.random.default_rng(0)
    for params in (SamplingParams(do_sample=False), SamplingParams(temperature=0.0), SamplingParams(temperature=0)):
        s = Sampler(params, 1000)
        for _ in range(20):
            x = rng.standard_normal(1000).astype(np.float32)
            assert s.sample(x) == int(np.argmax(x))
    tie = np.array([0.0, 3.0, 3.0], dtype=np.float32)
    assert Sampler(SamplingParams(do_sample=False), 3).sample(tie) == 1
    assert Sampler(SamplingParams(temperature=0.8, top_p=0.0, seed=0), 3).sample(tie) == 1


def test_seeded_determinism() -> None:
    rng = np.random.default_rng(1)
    logits = [rng.standard_normal(5000).astype(np.float32) * 3 for _ in range(50)]

    def run(seed: int) -> list[int]:
        s = Sampler(SamplingParams(temperature=1.0, top_p=0.95, seed=seed), 5000)
        return [s.sample(x) for x in logits]

    assert run(7) == run(7)
    assert run(7) != run(8)
    big = Sampler(SamplingParams(seed=2**64 - 1), 10).sample(np.zeros(10, np.float32))
    assert 0 <= big < 10


def test_non_finite_logits_raise() -> None:
    for params in (SamplingParams(), SamplingParams(do_sample=False)):
        s = Sampler(params, 4)
        for bad in (np.nan, np.inf):
            x = np.zeros(4, dtype=np.float32)
            x[2] = bad
            with pytest.raises(NumericalError):
                s.sample(x)
        with pytest.raises(NumericalError):  # every token forbidden
            s.sample(np.full(4, -np.inf, dtype=np.float32))


def test_masked_logits_are_never_drawn() -> None:
    """-inf is how a logits processor (a grammar mask) forbids a token: allowed, and never sampled."""
    x = np.array([-np.inf, 0.5, -np.inf, 0.0, -np.inf], dtype=np.float32)
    for params in (SamplingParams(do_sample=False), SamplingParams(seed=1, temperature=2.0, top_p=1.0),
                   SamplingParams(seed=2, top_k=3, repetition_penalty=1.3), SamplingParams(seed=3, min_p=0.01)):
        s = Sampler(params, 5)
        assert {s.sample(x, [0, 2]) for _ in range(200)} <= {1, 3}
        assert s.probs(x)[[0, 2, 4]].sum() == 0.0


def test_logits_shape_checked() -> None:
    s = Sampler(SamplingParams(), 8)
    with pytest.raises(ValueError):
        s.sample(np.zeros(7, np.float32))
    with pytest.raises(ValueError):
        s.sample(np.zeros((1, 8), np.float32))
    assert 0 <= s.sample(np.zeros(8, np.float64)) < 8  # other float dtypes are converted
    with pytest.raises(TypeError):
        Sampler({"temperature": 1.0}, 8)  # type: ignore[arg-type]
    for bad in (0, -1, 1.5, True):
        with pytest.raises((TypeError, ValueError)):
            Sampler(SamplingParams(), bad)  # type: ignore[arg-type]


# --- the full Llama vocabulary: candidate cuts are exact ---------------------------------------

V = 128_256


def _logits(kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "peaked":
        x = rng.standard_normal(V) * 2.5
        x[rng.integers(0, V, 40)] += rng.uniform(4, 14, 40)
    elif kind == "flat":
        x = rng.standard_normal(V) * 0.3
    else:  # "ties": a random model with quantized outputs
        x = rng.integers(-3, 3, V).astype(np.float64)
    return x.astype(np.float32)


def _reference_nucleus(w: np.ndarray, top_p: float) -> set[int]:
    order = np.argsort(-w, kind="stable")
    ws = w[order].astype(np.float64)
    return set(order[np.cumsum(ws) - ws <= top_p * ws.sum()].tolist())


@pytest.mark.parametrize("kind", ["peaked", "flat", "ties"])
@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.9, 0.99])
def test_nucleus_equals_full_sort(kind: str, top_p: float) -> None:
    x = _logits(kind, 3)
    s = Sampler(SamplingParams(temperature=0.7, top_p=top_p, seed=0), V)
    w = np.exp((x - x.max()) / np.float32(0.7)).astype(np.float32)
    expected = _reference_nucleus(w, top_p)
    work = w.copy()
    kept = s._nucleus(work, top_p * float(work.sum(dtype=np.float64)))
    got = set(kept.tolist()) if kept is not None else set(np.flatnonzero(work).tolist())
    # ties are broken by lower id first, as the stable reference sort does
    assert got == expected, (len(got), len(expected))


@pytest.mark.parametrize("kind", ["peaked", "flat", "ties"])
@pytest.mark.parametrize("k", [1, 40, 5000])
def test_top_k_ids_exact(kind: str, k: int) -> None:
    x = _logits(kind, 4)
    s = Sampler(SamplingParams(top_k=k), V)
    ids = s._top_k_ids(x, float(x.max()), k)
    assert ids.size == k and np.unique(ids).size == k
    kth = np.sort(x)[::-1][k - 1]
    assert x[ids].min() == kth and np.all(x[np.setdiff1d(np.arange(V), ids)] <= kth)


@pytest.mark.parametrize("kind", ["peaked", "flat"])
def test_big_vocab_samples_stay_in_the_nucleus(kind: str) -> None:
    x = _logits(kind, 5)
    params = SamplingParams(temperature=0.6, top_p=0.9, seed=11)
    allowed = set(np.flatnonzero(reference_probs(x, params) > 0).tolist())
    s = Sampler(params, V)
    draws = [s.sample(x) for _ in range(100)]
    outside = [d for d in draws if d not in allowed]
    assert len(outside) <= 1  # only a boundary token may differ by rounding


@pytest.mark.parametrize("n_vocab", [V, V + 100])
def test_two_level_draw_distribution(n_vocab: int) -> None:
    x = np.full(n_vocab, -40.0, dtype=np.float32)
    hot = {5: 0.0, 70_000: math.log(2.0), n_vocab - 1: math.log(3.0)}
    for i, v in hot.items():
        x[i] = v
    s = Sampler(SamplingParams(temperature=1.0, top_p=1.0, seed=3), n_vocab)
    n = 6000
    draws = np.array([s.sample(x) for _ in range(n)])
    assert set(np.unique(draws).tolist()) <= set(hot)
    for i, p in zip(hot, (1 / 6, 2 / 6, 3 / 6)):
        assert abs(np.mean(draws == i) - p) < 4.5 * math.sqrt(p * (1 - p) / n)


def test_min_p_large_candidate_set() -> None:
    x = _logits("flat", 6)
    params = SamplingParams(temperature=1.0, top_p=1.0, min_p=0.5, seed=4)
    allowed = reference_probs(x, params) > 0
    s = Sampler(params, V)
    assert all(allowed[s.sample(x)] for _ in range(200))


def test_history_from_prompt_is_cheap_and_correct() -> None:
    x = _logits("peaked", 7)
    top = int(np.argmax(x))
    s = Sampler(SamplingParams(do_sample=False, repetition_penalty=100.0), V)
    assert s.sample(x, list(range(0, V, 2)) + [top]) != top


# --- parameter validation (docs/ERRORS.md) -----------------------------------------------------

BAD_PARAMS = [
    ("max_new_tokens", 0, ValueError),
    ("max_new_tokens", -1, ValueError),
    ("max_new_tokens", 2**63, ValueError),
    ("max_new_tokens", 10.0, TypeError),
    ("max_new_tokens", None, TypeError),
    ("max_new_tokens", True, TypeError),
    ("temperature", float("nan"), ValueError),
    ("temperature", float("inf"), ValueError),
    ("temperature", -1.0, ValueError),
    ("temperature", 1e9, ValueError),
    ("temperature", "0.7", TypeError),
    ("temperature", None, TypeError),
    ("top_p", -1.0, ValueError),
    ("top_p", 1.5, ValueError),
    ("top_p", float("nan"), ValueError),
    ("top_p", [0.9], TypeError),
    ("top_k", -5, ValueError),
    ("top_k", 2**40, ValueError),
    ("top_k", 4.0, TypeError),
    ("min_p", -0.1, ValueError),
    ("min_p", 1.1, ValueError),
    ("min_p", float("inf"), ValueError),
    ("repetition_penalty", 0.0, ValueError),
    ("repetition_penalty", -1.0, ValueError),
    ("repetition_penalty", float("nan"), ValueError),
    ("repetition_penalty", 1e6, ValueError),
    ("do_sample", 1, TypeError),
    ("do_sample", "yes", TypeError),
    ("seed", -1, ValueError),
    ("seed", 2**64, ValueError),
    ("seed", 1.0, TypeError),
    ("seed", "42", TypeError),
    ("stop", "", ValueError),
    ("stop", [""], ValueError),
    ("stop", ["ok", 3], TypeError),
    ("stop", 5, TypeError),
    ("stop", {"a"}, TypeError),
    ("stop", ["x"] * 10_000, ValueError),
    ("stop", "y" * 1025, ValueError),
    ("stop", b"bytes", TypeError),
]


@pytest.mark.parametrize(("field", "value", "exc"), BAD_PARAMS)
def test_bad_params_raise_naming_the_field(field: str, value, exc: type) -> None:
    with pytest.raises(exc, match=field):
        SamplingParams(**{field: value})


def test_good_params() -> None:
    p = SamplingParams()
    assert (p.max_new_tokens, p.temperature, p.top_p, p.top_k, p.min_p) == (256, 0.6, 0.9, 0, 0.0)
    assert p.repetition_penalty == 1.0 and p.do_sample and p.seed is None and p.stop is None
    assert not p.greedy and SamplingParams(temperature=0).greedy and SamplingParams(do_sample=False).greedy
    SamplingParams(temperature=np.float32(0.5), top_k=np.int64(5), seed=np.uint64(2**64 - 1), do_sample=np.bool_(True))
    assert SamplingParams(stop="END").stop_strings == ("END",)
    assert SamplingParams(stop=["a", "b"] * 32).stop_strings == tuple(["a", "b"] * 32)
    assert normalize_stop(None) == ()
    p.temperature = float("nan")  # mutation after construction is caught by validate()
    with pytest.raises(ValueError, match="temperature"):
        p.validate()
    with pytest.raises(ValueError, match="temperature"):
        Sampler(p, 10)
