"""Tests of load_hf_dir: tiny checkpoints (ours, the safetensors package's, transformers'), and mkbad F8-F15."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import mkbad
import numpy as np
import pytest
from llama32_native.config import LlamaConfig
from llama32_native.errors import ConfigError, ModelLoadError, ModelNotFoundError, UnexpectedTensorError
from llama32_native.loading import Tensor
from llama32_native.loading.hf import internal_name, load_hf_dir
from llama32_native.schema import tensor_shapes as expected_shapes

DIR_CASES = mkbad.dir_cases()

HF_TO_INTERNAL_LAYER0 = {
    "model.layers.0.input_layernorm.weight": "blk.0.attn_norm",
    "model.layers.0.self_attn.q_proj.weight": "blk.0.attn_q",
    "model.layers.0.self_attn.k_proj.weight": "blk.0.attn_k",
    "model.layers.0.self_attn.v_proj.weight": "blk.0.attn_v",
    "model.layers.0.self_attn.o_proj.weight": "blk.0.attn_output",
    "model.layers.0.post_attention_layernorm.weight": "blk.0.ffn_norm",
    "model.layers.0.mlp.gate_proj.weight": "blk.0.ffn_gate",
    "model.layers.0.mlp.up_proj.weight": "blk.0.ffn_up",
    "model.layers.0.mlp.down_proj.weight": "blk.0.ffn_down",
}


def _internal(hf_name: str, n_layer: int = 2) -> str:
    name = internal_name(hf_name, n_layer)
    assert name is not None
    return name


def _load(path: Path | str, **kw: object) -> tuple[LlamaConfig, dict[str, Tensor]]:
    cfg, tensors, files = load_hf_dir(path, **kw)
    # Copy out so the files can be closed here; the views themselves are checked elsewhere.
    copied = {n: Tensor(t.kind, t.shape, np.array(t.data)) for n, t in tensors.items()}
    for f in files:
        f.close()
    return cfg, copied


def _assert_matches(tensors: dict[str, Tensor], hf: dict[str, np.ndarray], kind: str, tied: bool) -> None:
    want = {_internal(n): a for n, a in hf.items() if not (tied and n == "lm_head.weight")}
    assert set(tensors) == set(want)
    for name, a in want.items():
        t = tensors[name]
        assert t.kind == kind, name
        assert t.shape == a.shape == t.data.shape, name
        np.testing.assert_array_equal(t.data, a, err_msg=name)


# ----------------------------------------------------------------------------- names and shapes


def test_name_mapping() -> None:
    for hf, ours in HF_TO_INTERNAL_LAYER0.items():
        assert internal_name(hf, 2) == ours
        assert internal_name(hf.replace(".0.", ".1."), 2) == ours.replace(".0.", ".1.")
    assert internal_name("model.embed_tokens.weight", 2) == "tok_embd"
    assert internal_name("model.norm.weight", 2) == "output_norm"
    assert internal_name("lm_head.weight", 2) == "output"
    assert internal_name("model.layers.1.self_attn.rotary_emb.inv_freq", 2) is None
    assert internal_name("model.rotary_emb.inv_freq", 2) is None
    for bad in (
        "model.layers.2.mlp.up_proj.weight",
        "model.layers.1.mlp.up_proj",
        "embed_tokens.weight",
        "model.layers.1e0.mlp.up_proj.weight",
        "model.layers. 1.mlp.up_proj.weight",
    ):
        with pytest.raises(UnexpectedTensorError):
            internal_name(bad, 2)


def test_expected_shapes_of_the_real_models() -> None:
    s1 = expected_shapes(LlamaConfig.preset("llama-3.2-1b"))
    assert len(s1) == 1 + 9 * 16 + 1 and "output" not in s1
    assert s1["tok_embd"] == (128256, 2048)
    assert s1["blk.15.attn_k"] == (512, 2048) and s1["blk.0.ffn_down"] == (2048, 8192)
    s3 = expected_shapes(LlamaConfig.preset("llama-3.2-3b"))
    assert len(s3) == 254
    assert s3["blk.27.attn_q"] == (3072, 3072) and s3["blk.0.attn_v"] == (1024, 3072)


# ----------------------------------------------------------------------------- our tiny checkpoints


@pytest.mark.parametrize("dtype,kind", [("F32", "f32"), ("F16", "f16"), ("BF16", "bf16")])
def test_tiny_checkpoint(tmp_path: Path, dtype: str, kind: str) -> None:
    hf = mkbad.tiny_tensors(dtype=dtype)
    d = mkbad.write_checkpoint(tmp_path / "m", tensors=hf)
    cfg, tensors = _load(d)
    assert (cfg.n_embd, cfg.n_layer, cfg.n_head, cfg.n_head_kv, cfg.head_dim) == (64, 2, 4, 2, 16)
    assert cfg.tie_word_embeddings and "output" not in tensors
    _assert_matches(tensors, hf, kind, tied=True)
    assert list(tensors) == list(expected_shapes(cfg))  # the schema's order


def test_tensors_are_views_of_the_open_files(tmp_path: Path) -> None:
    d = mkbad.write_checkpoint(tmp_path / "m")
    _, tensors, files = load_hf_dir(d)
    try:
        assert len(files) == 1 and not files[0].closed
        t = tensors["blk.1.attn_q"]
        assert isinstance(t, Tensor) and not t.data.flags.writeable and not t.data.flags.owndata
        assert np.shares_memory(t.data, files[0].array("model.layers.1.self_attn.q_proj.weight"))
    finally:
        for f in files:
            f.close()


def test_untied_head(tmp_path: Path) -> None:
    config = dict(mkbad.TINY_CONFIG, tie_word_embeddings=False)
    hf = mkbad.tiny_tensors(config)
    d = mkbad.write_checkpoint(tmp_path / "m", config=config, tensors=hf)
    cfg, tensors = _load(d)
    assert not cfg.tie_word_embeddings
    _assert_matches(tensors, hf, "f32", tied=False)
    np.testing.assert_array_equal(tensors["output"].data, hf["lm_head.weight"])


def test_sharded_equals_single(tmp_path: Path) -> None:
    hf = mkbad.tiny_tensors(dtype="BF16")
    single = mkbad.write_checkpoint(tmp_path / "single", tensors=hf)
    sharded = mkbad.write_checkpoint(tmp_path / "sharded", tensors=hf, n_shards=4)
    _, a = _load(single)
    _, _, files = load_hf_dir(sharded)
    assert len(files) == 4
    for f in files:
        f.close()
    _, b = _load(sharded)
    assert a.keys() == b.keys()
    for n in a:
        np.testing.assert_array_equal(a[n].data, b[n].data)


def test_path_forms(tmp_path: Path) -> None:
    d = mkbad.write_checkpoint(tmp_path / "m")
    s = mkbad.write_checkpoint(tmp_path / "s", n_shards=2)
    for p in (d, str(d), d / "model.safetensors", s, s / "model.safetensors.index.json"):
        _, tensors = _load(p)
        assert len(tensors) == 1 + 9 * 2 + 1, p


def test_mixed_dtypes_per_tensor(tmp_path: Path) -> None:
    f32 = mkbad.tiny_tensors()
    bf = mkbad.tiny_tensors(dtype="BF16")
    mixed = {n: (bf[n] if "mlp" in n else f32[n]) for n in f32}
    _, tensors = _load(mkbad.write_checkpoint(tmp_path / "m", tensors=mixed))
    assert tensors["blk.0.ffn_up"].kind == "bf16" and tensors["blk.0.attn_q"].kind == "f32"


def test_hf_cache_symlink_layout(tmp_path: Path) -> None:
    """The HF hub cache links every file to ../../blobs/<hash>; that must keep loading."""
    src = mkbad.write_checkpoint(tmp_path / "src", n_shards=2)
    blobs = tmp_path / "repo" / "blobs"
    snap = tmp_path / "repo" / "snapshots" / "abc123"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    for i, f in enumerate(sorted(src.iterdir())):
        f.rename(blobs / f"blob{i}")
        (snap / f.name).symlink_to(Path("..", "..", "blobs", f"blob{i}"))
    _, tensors = _load(snap)
    assert len(tensors) == 20


def test_nonexistent_path(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        load_hf_dir(tmp_path / "nope")
    with pytest.raises(ModelLoadError):
        load_hf_dir(tmp_path)  # empty directory
    (tmp_path / "config.txt").write_text("{}")
    with pytest.raises(ModelLoadError):
        load_hf_dir(tmp_path / "config.txt")


def test_two_unindexed_safetensors_are_ambiguous(tmp_path: Path) -> None:
    d = mkbad.write_checkpoint(tmp_path / "m")
    (d / "extra.safetensors").write_bytes((d / "model.safetensors").read_bytes())
    (d / "model.safetensors").rename(d / "weights.safetensors")
    with pytest.raises(ModelLoadError):
        load_hf_dir(d)


def test_files_closed_when_loading_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llama32_native.loading import hf, safetensors

    opened: list[safetensors.SafetensorsFile] = []

    class Recording(safetensors.SafetensorsFile):
        def __init__(self, path: str) -> None:
            super().__init__(path)
            opened.append(self)

    monkeypatch.setattr(hf, "SafetensorsFile", Recording)
    t = mkbad.tiny_tensors()
    t["model.norm.weight"] = np.zeros(3, np.float32)
    d = mkbad.write_checkpoint(tmp_path / "m", tensors=t, n_shards=3)
    with pytest.raises(ModelLoadError):
        load_hf_dir(d)
    assert len(opened) == 3 and all(f.closed for f in opened)


# ----------------------------------------------------------------------------- mkbad F8-F15


@pytest.mark.parametrize("case", DIR_CASES, ids=[c.id for c in DIR_CASES])
def test_bad_checkpoint(case: mkbad.DirCase, tmp_path: Path) -> None:
    path = case.build(tmp_path)
    if case.expect is None:
        _, tensors = _load(path, **case.kwargs)
        assert len(tensors) >= 20
    else:
        with pytest.raises(BaseException) as info:
            load_hf_dir(path, **case.kwargs)
        assert type(info.value) is case.expect, repr(info.value)
    if case.canary is not None:
        assert not (tmp_path / case.canary).exists(), "a pickle was executed"


def test_canary_pickle_is_live(tmp_path: Path) -> None:
    """The F15 canary really would fire if anything unpickled it."""
    canary = tmp_path / "CANARY"
    pickle.loads(mkbad.canary_pickle(canary)).close()
    assert canary.exists()


def test_pickle_refusal_says_why(tmp_path: Path) -> None:
    d = mkbad.dir_cases()[[c.id for c in DIR_CASES].index("F15-dir-with-pytorch-model-bin")].build(tmp_path)
    with pytest.raises(ModelLoadError, match="pytorch_model.bin"):
        load_hf_dir(d)


def test_error_names_tensor_and_shapes(tmp_path: Path) -> None:
    t = mkbad.tiny_tensors()
    t["model.layers.1.self_attn.k_proj.weight"] = np.zeros((64, 32), np.float32)
    d = mkbad.write_checkpoint(tmp_path / "m", tensors=t)
    with pytest.raises(ModelLoadError) as info:
        load_hf_dir(d)
    msg = str(info.value)
    assert "model.layers.1.self_attn.k_proj.weight" in msg and "[32, 64]" in msg and "[64, 32]" in msg


# ----------------------------------------------------------------------------- other writers


_GOOD_HF = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "intermediate_size": 96, "vocab_size": 256,
            "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 8192}}


@pytest.mark.parametrize("path,value", [
    ("rope_scaling.original_max_position_embeddings", 1e999), ("rope_scaling.original_max_position_embeddings", 1.9),
    ("rope_scaling.original_max_position_embeddings", "8192"), ("rope_scaling.original_max_position_embeddings", True),
    ("rope_scaling.factor", "32"), ("rope_scaling.factor", float("nan")), ("rope_scaling.factor", [32]),
    ("hidden_size", "64"), ("hidden_size", 64.0), ("num_attention_heads", 0), ("num_hidden_layers", 2.5),
])
def test_config_values_are_not_coerced(path: str, value: object) -> None:
    """A config value of the wrong type is refused with ConfigError, never converted (1.9 -> 1) or leaked as
    OverflowError/TypeError."""
    d = json.loads(json.dumps(_GOOD_HF))
    *parents, key = path.split(".")
    target = d
    for p in parents:
        target = target[p]
    target[key] = value
    LlamaConfig.from_hf_dict(_GOOD_HF)  # the unmodified config is fine
    with pytest.raises(ConfigError):
        LlamaConfig.from_hf_dict(d)


def test_checkpoint_written_by_safetensors_package(tmp_path: Path) -> None:
    st_numpy = pytest.importorskip("safetensors.numpy")
    d = tmp_path / "m"
    d.mkdir()
    mkbad.write_config(d, mkbad.TINY_CONFIG)
    hf = mkbad.tiny_tensors()
    st_numpy.save_file(hf, str(d / "model.safetensors"), metadata={"format": "pt"})
    _, tensors = _load(d)
    _assert_matches(tensors, hf, "f32", tied=True)


def _hf_model(tmp_path: Path, name: str, *, tie: bool = True, dtype: str = "float32", **save_kw: object):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=160,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        tie_word_embeddings=tie,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    )
    model = transformers.LlamaForCausalLM(config).to(getattr(torch, dtype)).eval()
    d = tmp_path / name
    model.save_pretrained(str(d), **save_kw)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return torch, d, state


def _check_against_state(torch, d: Path, state: dict, kind: str, tie: bool) -> None:
    cfg, tensors = _load(d)
    assert (cfg.n_embd, cfg.n_layer, cfg.n_ff, cfg.n_vocab, cfg.tie_word_embeddings) == (64, 3, 96, 160, tie)
    assert cfg.rope_scaling is not None and cfg.rope_scaling.factor == 32.0
    want = {n: v for n, v in state.items() if "rotary_emb" not in n and not (tie and n == "lm_head.weight")}
    assert set(tensors) == {_internal(n, 3) for n in want}
    for hf_name, v in want.items():
        t = tensors[_internal(hf_name, 3)]
        assert t.kind == kind and t.shape == tuple(v.shape), hf_name
        ref = v.view(torch.int16).numpy().view(np.uint16) if kind == "bf16" else v.numpy()
        np.testing.assert_array_equal(t.data, ref, err_msg=hf_name)


def test_transformers_fp32(tmp_path: Path) -> None:
    torch, d, state = _hf_model(tmp_path, "fp32")
    assert (d / "model.safetensors").exists()
    _check_against_state(torch, d, state, "f32", tie=True)


def test_transformers_sharded(tmp_path: Path) -> None:
    torch, d, state = _hf_model(tmp_path, "sharded", max_shard_size="40KB")
    index = json.loads((d / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    _check_against_state(torch, d, state, "f32", tie=True)


def test_transformers_untied_bf16(tmp_path: Path) -> None:
    torch, d, state = _hf_model(tmp_path, "bf16", tie=False, dtype="bfloat16")
    _check_against_state(torch, d, state, "bf16", tie=False)
    assert not os.path.exists(d / "pytorch_model.bin")
