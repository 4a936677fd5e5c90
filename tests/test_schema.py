"""The tensor schema is written once: every loader, the synthetic weights, save() and the budget follow schema.py.

Also checks the loading layer's imports: no loader imports the model module (the old import circle), and the
duplicated helpers stay single (one JSON parser, one block-layout table, one end-of-generation list).
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
from llama32_native import schema
from llama32_native.config import LlamaConfig
from llama32_native.loading import hf
from llama32_native.loading.gguf import GGML_TYPES
from llama32_native.loading.gguf_dequant import BLOCK_LAYOUT
from llama32_native.loading.synthetic import random_tensors

PKG = Path(__file__).resolve().parents[1] / "python" / "llama32_native"
CONFIGS = [
    LlamaConfig.preset("llama-3.2-1b"),
    LlamaConfig.preset("llama-3.2-3b"),
    LlamaConfig(n_embd=64, n_layer=3, n_head=4, n_head_kv=2, n_ff=96, n_vocab=300, tie_word_embeddings=False),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["1b", "3b", "tiny-untied"])
def test_specs_of_a_config(cfg: LlamaConfig) -> None:
    specs = schema.tensor_specs(cfg)
    names = [s.name for s in specs]
    assert len(names) == len(set(names)) == (1 + (not cfg.tie_word_embeddings)) + 9 * cfg.n_layer + 1
    assert names == schema.matrix_names(cfg) + schema.vector_names(cfg)
    assert all((len(s.shape) == 2) == (s.role == schema.MATRIX) for s in specs)
    shapes = schema.tensor_shapes(cfg)
    assert shapes["tok_embd"] == (cfg.n_vocab, cfg.n_embd)
    assert shapes["blk.0.attn_k"] == (cfg.n_head_kv * cfg.head_dim, cfg.n_embd)
    assert shapes["blk.0.ffn_down"] == (cfg.n_embd, cfg.n_ff)
    assert ("output" in shapes) is (not cfg.tie_word_embeddings)


def test_parameter_counts_of_llama_3_2() -> None:
    """Meta's published sizes: 1,235,814,400 and 3,212,749,824 weights (tied embeddings)."""
    assert schema.n_params(LlamaConfig.preset("llama-3.2-1b")) == 1_235_814_400
    assert schema.n_params(LlamaConfig.preset("llama-3.2-3b")) == 3_212_749_824
    cfg = CONFIGS[2]
    assert schema.n_params(cfg) == sum(math.prod(s) for s in schema.tensor_shapes(cfg).values())


@pytest.mark.parametrize("quant", ["f32", "bf16", "q8_0", "q4_0"])
def test_default_plan(quant: str) -> None:
    cfg = CONFIGS[2]
    plan = schema.tensor_plan(cfg, quant)
    assert list(plan) == schema.matrix_names(cfg)
    big = "q8_0" if quant == "q4_0" else quant
    assert plan["tok_embd"] == plan["output"] == big
    assert {plan[n] for n in plan if n.startswith("blk.")} == {quant}


def test_synthetic_weights_follow_the_schema() -> None:
    cfg = CONFIGS[2]
    plan = schema.tensor_plan(cfg, "q4_0")
    tensors = random_tensors(cfg, plan)
    assert list(tensors) == [s.name for s in schema.tensor_specs(cfg)]
    for spec in schema.tensor_specs(cfg):
        t = tensors[spec.name]
        assert t.shape == spec.shape
        assert t.data.nbytes == schema.data_nbytes(t.kind, spec.shape)


def test_hf_names_cover_exactly_the_schema() -> None:
    cfg = CONFIGS[2]
    assert set(hf._hf_names(cfg)) >= set(schema.tensor_shapes(cfg))
    for internal, hf_name in hf._hf_names(cfg).items():
        if internal in schema.tensor_shapes(cfg):
            assert hf.internal_name(hf_name, cfg.n_layer) == internal


def test_one_block_layout_table() -> None:
    for name, (elems, nbytes) in BLOCK_LAYOUT.items():
        assert any(t == (name, elems, nbytes) for t in GGML_TYPES.values())
    names = {"q8_0": "Q8_0", "q4_0": "Q4_0", "q4_1": "Q4_1", "iq4_nl": "IQ4_NL"}
    layouts = {name: (elems, nbytes) for name, elems, nbytes in GGML_TYPES.values()}
    assert {k: layouts[names[k]] for k in schema.BLOCK_BYTES} == {k: (32, b) for k, b in schema.BLOCK_BYTES.items()}


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under `if TYPE_CHECKING:` (imports for annotations only)."""
    out, todo = [], [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        out.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return out


def _imports(path: Path) -> set[str]:
    """Absolute names of the package modules `path` imports (anywhere in the file, lazy imports included)."""
    rel = path.relative_to(PKG.parent).with_suffix("")
    package = list(rel.parts[:-1])
    out = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            mod = ".".join(base + ([node.module] if node.module else []))
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


BOTTOM = ["errors", "files", "config", "schema", "pattern", "tokenizer", "memory", "loading/__init__",
          "loading/safetensors", "loading/hf", "loading/gguf", "loading/gguf_dequant", "loading/gguf_model",
          "loading/native", "loading/synthetic", "loading/open"]


@pytest.mark.parametrize("module", BOTTOM)
def test_lower_layers_never_import_the_model(module: str) -> None:
    imported = _imports(PKG / f"{module}.py")
    assert not any(m.startswith("llama32_native.model") for m in imported), imported


def test_lower_layers_have_no_import_cycle() -> None:
    names = {m: "llama32_native." + m.replace("/__init__", "").replace("/", ".") for m in BOTTOM}
    graph = {names[m]: {i for i in _imports(PKG / f"{m}.py") if i in names.values()} for m in BOTTOM}
    seen: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        if seen.get(node) == 1:
            pytest.fail("import cycle: " + " -> ".join([*stack, node]))
        if seen.get(node) == 2:
            return
        seen[node] = 1
        for nxt in graph.get(node, ()):
            if nxt != node and not node.startswith(nxt + "."):  # a package importing its own __init__ is fine
                visit(nxt, [*stack, node])
        seen[node] = 2

    for n in graph:
        visit(n, [])


def test_single_helpers() -> None:
    """The helpers the loaders used to copy live in one place each."""
    sources = {p: p.read_text() for p in PKG.rglob("*.py")}
    for needle in ("def _no_duplicates", "def no_duplicates", "PICKLE_SUFFIXES = ", "GGML_TYPES: dict",
                   "END_OF_GENERATION_NAMES = ", "def _bracket_depth", "os.O_NONBLOCK"):
        holders = [p.name for p, text in sources.items() if needle in text]
        assert len(holders) <= 1, (needle, holders)


def _core_dict(cfg: LlamaConfig) -> dict:
    return {"n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_head_kv": cfg.n_head_kv,
            "head_dim": cfg.head_dim, "n_ff": cfg.n_ff, "n_vocab": cfg.n_vocab, "rms_eps": cfg.rms_eps,
            "rope_inv_freq": [float(x) for x in cfg.rope_inv_freq()], "tie_word_embeddings": cfg.tie_word_embeddings}


@pytest.mark.parametrize("cfg", [*CONFIGS, LlamaConfig(n_embd=32, n_layer=1, n_head=2, n_head_kv=1, n_ff=40,
                                                       n_vocab=7, head_dim=48)], ids=["1b", "3b", "tiny-untied", "odd"])
def test_engine_and_schema_agree(cfg: LlamaConfig) -> None:
    """The C++ side declares the same tensors (name, shape, matrix or vector): the module function and a built
    engine's own list."""
    from llama32_native import _core

    mine = {s.name: (s.shape, s.role) for s in schema.tensor_specs(cfg)}
    theirs = {name: (tuple(shape), role) for name, shape, role in _core.tensor_specs(_core_dict(cfg))}
    assert theirs == mine
    if cfg.n_layer <= 3:
        engine = _core.Engine(_core_dict(cfg), 16, 1, "f32", 1)
        assert {n: (tuple(s), r) for n, s, r in engine.tensor_specs()} == mine
