"""Other libraries' option names at the Model API: a hint naming ours, never a bare TypeError.

Contract under test: OpenAI / transformers / llama.cpp spellings (max_tokens, max_length, n_predict, ...) raise
InvalidArgumentTypeError naming this library's option; an unknown name lists the known ones; nothing runs first.
"""

from __future__ import annotations

import llama32_native as l32
import pytest
from conftest import tiny_config


@pytest.fixture(scope="module")
def model() -> l32.Model:
    m = l32.Model.random(tiny_config(), quant="f32", context_length=64, max_sequences=2)
    yield m
    m.close()


@pytest.mark.parametrize(("theirs", "ours"), [("max_tokens", "max_new_tokens"), ("max_length", "max_new_tokens"),
                                              ("n_predict", "max_new_tokens"), ("stop_sequences", "stop"),
                                              ("repeat_penalty", "repetition_penalty")])
def test_other_spellings_name_ours(model: l32.Model, theirs: str, ours: str) -> None:
    with pytest.raises(l32.InvalidArgumentTypeError, match=f"'{theirs}'.*'{ours}'"):
        model.generate_tokens([1, 2, 3], **{theirs: 5})
    assert len(list(model.generate_tokens([1, 2, 3], max_new_tokens=2, do_sample=False))) <= 2  # ours works


def test_unknown_option_lists_the_known_ones(model: l32.Model) -> None:
    with pytest.raises(l32.InvalidArgumentTypeError, match="max_new_tokens") as e:
        model.generate_tokens([1, 2, 3], n=2)  # OpenAI's n: one generation per call here (generate_batch for more)
    assert "'n'" in str(e.value)
