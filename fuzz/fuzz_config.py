"""atheris harness: `LlamaConfig.from_hf_dict` on fuzzed config.json documents.

Two modes chosen by the first byte: raw JSON text (libFuzzer mutates the seed files), or a valid
Llama 3.2 config with fuzzed values swapped into its fields (structure-aware). Only ConfigError
(the package's Error hierarchy) may escape from_hf_dict; a config it accepts must be usable:
rope frequencies finite, sizes positive and consistent.
"""

from __future__ import annotations

import json
import math
import sys

import atheris

with atheris.instrument_imports(include=["llama32_native"]):
    from _common import check
    from llama32_native.config import LlamaConfig

BASE = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
    "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256, "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": True, "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009], "torch_dtype": "bfloat16",
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
}
ODD_VALUES = [None, True, False, 0, -1, 1, 2, 3, 7, 2**31, 2**40, 2**63, 2**64, -(2**63), 0.5, -0.0, 1e-300,
              1e300, float("nan"), float("inf"), -float("inf"), "", "llama3", "default", "linear", "dynamic",
              "yarn", "1", [], [1], [128001, -1], {}, {"rope_type": "llama3"}, "x" * 1000]
KEYS = sorted(set(BASE) | {"rope_parameters", "num_kv_heads", "n_ctx", "dtype", "text_config"})
SUB_KEYS = ["factor", "high_freq_factor", "low_freq_factor", "original_max_position_embeddings", "rope_type",
            "type", "rope_theta"]


def _value(fdp: atheris.FuzzedDataProvider):
    kind = fdp.ConsumeIntInRange(0, 3)
    if kind == 0:
        return fdp.PickValueInList(ODD_VALUES)
    if kind == 1:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 9))
    if kind == 2:
        return fdp.ConsumeRegularFloat()
    return fdp.ConsumeUnicodeNoSurrogates(8)


def _structured(fdp: atheris.FuzzedDataProvider) -> dict:
    d = json.loads(json.dumps(BASE))
    for _ in range(fdp.ConsumeIntInRange(1, 6)):
        op = fdp.ConsumeIntInRange(0, 3)
        if op == 0:
            d[fdp.PickValueInList(KEYS)] = _value(fdp)
        elif op == 1:
            d.pop(fdp.PickValueInList(KEYS), None)
        else:
            rs = d.get("rope_scaling")
            if not isinstance(rs, dict):
                rs = d["rope_scaling"] = {}
            if op == 2:
                rs[fdp.PickValueInList(SUB_KEYS)] = _value(fdp)
            else:
                rs.pop(fdp.PickValueInList(SUB_KEYS), None)
    return d


def _accepted(cfg: LlamaConfig) -> None:
    """A config from_hf_dict returns must be internally consistent (else the engine sees garbage)."""
    for name in ("n_embd", "n_layer", "n_head", "n_head_kv", "head_dim", "n_ff", "n_vocab", "n_ctx"):
        v = getattr(cfg, name)
        assert isinstance(v, int) and not isinstance(v, bool) and v > 0, (name, v)
    assert cfg.n_head % cfg.n_head_kv == 0, cfg
    assert math.isfinite(cfg.rms_eps) and cfg.rms_eps > 0, cfg.rms_eps
    assert math.isfinite(cfg.rope_theta) and cfg.rope_theta > 0, cfg.rope_theta
    inv = cfg.rope_inv_freq()
    assert len(inv) == cfg.head_dim // 2 and all(math.isfinite(float(x)) for x in inv), inv
    assert all(isinstance(i, int) for i in cfg.eos_token_ids), cfg.eos_token_ids


def test_one_input(data: bytes) -> None:
    if not data:
        return
    if data[0] & 1:
        try:
            doc = json.loads(data[1:])
        except (ValueError, RecursionError):  # not JSON: the loader's own json step reports this
            return
    else:
        doc = _structured(atheris.FuzzedDataProvider(data[1:]))
    try:
        cfg = LlamaConfig.from_hf_dict(doc)
    except Exception as e:  # noqa: BLE001
        check(e)
        return
    _accepted(cfg)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
