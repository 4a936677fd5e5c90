"""LogitBias and Penalties: OpenAI semantics and validation, on synthetic logits."""

from __future__ import annotations

import numpy as np
import pytest
from llama32_native import errors
from llama32_native.processors import LogitBias, Penalties


def test_logit_bias_adds_and_changes_argmax() -> None:
    logits = np.array([0.0, 5.0, 1.0, 2.0], dtype=np.float32)
    assert int(np.argmax(logits)) == 1
    out = LogitBias({"2": 10, 1: -100}, n_vocab=4)(logits.copy(), [])
    np.testing.assert_allclose(out, [0.0, -95.0, 11.0, 2.0])
    assert int(np.argmax(out)) == 2


@pytest.mark.parametrize(("bias", "exc"), [
    ({5: 1.0}, errors.InvalidArgumentError),
    ({"x": 1.0}, errors.InvalidArgumentError),
    ({1: 101}, errors.InvalidArgumentError),
    ({1: float("nan")}, errors.InvalidArgumentError),
    ({1: "3"}, errors.InvalidArgumentTypeError),
    ({1.5: 3}, errors.InvalidArgumentTypeError),
    ([1, 2], errors.InvalidArgumentTypeError),
])
def test_logit_bias_rejects(bias: object, exc: type) -> None:
    with pytest.raises(exc):
        LogitBias(bias, n_vocab=4)  # type: ignore[arg-type]


def test_penalties_match_openai_formula() -> None:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(50).astype(np.float32)
    generated = [3, 7, 3, 3, 9, 7]
    presence, frequency = 0.7, -0.3
    out = Penalties(presence, frequency)(logits.copy(), generated)
    expect = logits.astype(np.float64).copy()
    for j in range(50):  # mu[j] - c[j] * alpha_frequency - (c[j] > 0) * alpha_presence
        c = generated.count(j)
        expect[j] -= c * frequency + (c > 0) * presence
    np.testing.assert_allclose(out, expect, rtol=0, atol=1e-6)
    assert Penalties(0.0, 0.0)(logits.copy(), generated).tolist() == logits.tolist()


def test_penalties_range() -> None:
    with pytest.raises(errors.InvalidArgumentError):
        Penalties(2.5, 0.0)
    with pytest.raises(errors.InvalidArgumentTypeError):
        Penalties(0.0, "1")  # type: ignore[arg-type]
