"""The command line, run as `python -m llama32_native` in subprocesses on a tiny checkpoint.

Contract under test: text on stdout, progress on stderr; `error: ...` and exit 1 for package errors,
2 for usage errors; chat driven through stdin honours /reset and /quit; quantize writes a loadable file.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import subprocess_env
from conftest_tokenizer import TINY_LLAMA3_N_BASE, TINY_LLAMA3_N_VOCAB, tiny_llama3_tiktoken_text
from llama32_native.loading.safetensors import write_safetensors

# Meta's special ids in the tiny vocabulary: <|begin_of_text|>, then <|end_of_text|>, <|eom_id|>, <|eot_id|>.
BOS = TINY_LLAMA3_N_BASE
EOS_IDS = [TINY_LLAMA3_N_BASE + 1, TINY_LLAMA3_N_BASE + 8, TINY_LLAMA3_N_BASE + 9]


def make_tiny_checkpoint(directory: Path, seed: int = 0) -> Path:
    """A Hugging Face Llama directory: hidden 64, 2 layers, the tiny Llama-3-style tokenizer as tokenizer.model.

    Written with the package's own safetensors writer: no optional package is needed.
    """
    n_embd, n_ff, n_layer, n_head, n_kv, head_dim, n_vocab = 64, 96, 2, 4, 2, 16, TINY_LLAMA3_N_VOCAB
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.5).astype(np.float32)

    # Special tokens get zero embedding rows, hence (tied) logits of exactly 0 where the others reach several units:
    # the random model practically never emits one, so generations run to max_tokens with non-empty text, as they
    # did with a 128256-token vocabulary whose 256 specials were a negligible share.
    embd = w(n_vocab, n_embd)
    embd[TINY_LLAMA3_N_BASE:] = 0.0
    t = {"model.embed_tokens.weight": embd, "model.norm.weight": np.ones(n_embd, np.float32)}
    for i in range(n_layer):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = np.ones(n_embd, np.float32)
        t[p + "post_attention_layernorm.weight"] = np.ones(n_embd, np.float32)
        t[p + "self_attn.q_proj.weight"] = w(n_head * head_dim, n_embd)
        t[p + "self_attn.k_proj.weight"] = w(n_kv * head_dim, n_embd)
        t[p + "self_attn.v_proj.weight"] = w(n_kv * head_dim, n_embd)
        t[p + "self_attn.o_proj.weight"] = w(n_embd, n_head * head_dim)
        t[p + "mlp.gate_proj.weight"] = w(n_ff, n_embd)
        t[p + "mlp.up_proj.weight"] = w(n_ff, n_embd)
        t[p + "mlp.down_proj.weight"] = w(n_embd, n_ff)
    directory.mkdir(parents=True, exist_ok=True)
    write_safetensors(directory / "model.safetensors", t)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": n_embd,
        "intermediate_size": n_ff, "num_hidden_layers": n_layer, "num_attention_heads": n_head,
        "num_key_value_heads": n_kv, "head_dim": head_dim, "vocab_size": n_vocab,
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "tie_word_embeddings": True, "bos_token_id": BOS, "eos_token_id": EOS_IDS,
        "torch_dtype": "float32", "hidden_act": "silu",
    }
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "tokenizer.model").write_text(tiny_llama3_tiktoken_text())
    return directory


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny_hf") / "tiny")


def run_cli(*args: str, stdin: str | None = None, timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = subprocess_env(OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"), **(env or {}))
    return subprocess.run([sys.executable, "-m", "llama32_native", *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout, env=env, check=False)


# ---------------------------------------------------------------------- info
def test_info_system() -> None:
    r = run_cli("info")
    assert r.returncode == 0, r.stderr
    assert "isa" in r.stdout and "threads" in r.stdout
    r = run_cli("info", "--json")
    info = json.loads(r.stdout)
    assert info["system"]["isa"] in info["system"]["available_isas"]


def test_info_model(tiny_dir: Path) -> None:
    r = run_cli("info", str(tiny_dir), "--quant", "f32", "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)["model"]
    assert m["quant"] == "f32"
    assert m["weight_bytes"] >= TINY_LLAMA3_N_VOCAB * 64 * 4
    assert m["config"]["n_layer"] == 2 and m["config"]["n_embd"] == 64
    assert m["tokenizer"]["n_vocab"] == TINY_LLAMA3_N_VOCAB and m["tokenizer"]["bos_id"] == BOS
    assert m["chat_format"] == "Llama3ChatFormat"
    assert "loading" in r.stderr  # progress goes to stderr, never into the JSON


# ---------------------------------------------------------------------- generate
def test_generate_streams_and_is_deterministic(tiny_dir: Path) -> None:
    args = ("generate", str(tiny_dir), "Hello there", "-n", "12", "--greedy", "--quant", "f32", "--stats")
    a, b = run_cli(*args), run_cli(*args)
    assert a.returncode == 0, a.stderr
    assert a.stdout.strip() and a.stdout == b.stdout
    assert "tokens/s" in a.stderr
    seeded = ("generate", str(tiny_dir), "Hi", "-n", "8", "--seed", "7", "-q")
    c, d = run_cli(*seeded), run_cli(*seeded)
    assert c.returncode == 0 and c.stdout == d.stdout and c.stderr == ""


def test_generate_prompt_from_stdin(tiny_dir: Path) -> None:
    r = run_cli("generate", str(tiny_dir), "-", "-n", "4", "--greedy", "-q", stdin="Once upon a time")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


# ---------------------------------------------------------------------- chat
def test_chat_through_stdin(tiny_dir: Path) -> None:
    r = run_cli("chat", str(tiny_dir), "-n", "4", "--greedy", "--system", "Be brief.",
                stdin="hi\n/reset\nhello again\n/quit\nnot read\n")
    assert r.returncode == 0, r.stderr
    assert "(conversation reset)" in r.stderr
    assert r.stdout.count("\n") >= 2  # two answered turns


class _FakeTokenizer:
    def token_bytes(self, token_id: int) -> bytes:
        return f"<{token_id}>".encode()

    def is_special(self, token_id: int) -> bool:
        return False


class _FakeChatModel:
    """Records the conversation of each reply; answers `n_answer` tokens (1000 + turn number each)."""

    def __init__(self, n_answer: int = 1) -> None:
        self.calls: list[list[dict[str, str]]] = []
        self.n_answer = n_answer
        self.tokenizer = _FakeTokenizer()
        self.chat_format = self

    def encode(self, messages, add_generation_prompt=False):
        self.calls.append([dict(m) for m in messages])
        return [1, 2, 3]

    def generate_tokens(self, ids, max_new_tokens=256, **sampling):
        return iter([1000 + len(self.calls)] * min(self.n_answer, max_new_tokens))


def test_chat_loop_history_reset_quit() -> None:
    from llama32_native.cli import ChatLoop

    model = _FakeChatModel()
    out = io.StringIO()
    rc = ChatLoop(model, {}, system="sys").run(io.StringIO("a\n\nb\n/reset\nc\n/quit\nd\n"), out)
    assert rc == 0
    assert out.getvalue() == "<1001>\n<1002>\n<1003>\n"
    assert [m["content"] for m in model.calls[1]] == ["sys", "a", "<1001>", "b"]  # multi-turn
    assert [m["content"] for m in model.calls[2]] == ["sys", "c"]  # after /reset; "d" after /quit never read


def test_chat_unknown_command_gets_help(capsys: pytest.CaptureFixture[str]) -> None:
    from llama32_native.cli import ChatLoop

    model = _FakeChatModel()
    out = io.StringIO()
    ChatLoop(model, {}).run(io.StringIO("/frobnicate now\n/help\n /not a command\n/usr/bin is a path\n"), out)
    err = capsys.readouterr().err
    assert "unknown command /frobnicate" in err and err.count("commands: /reset") == 2
    assert [c[-1]["content"] for c in model.calls] == [" /not a command", "/usr/bin is a path"]  # sent as text


def test_chat_marks_a_reply_cut_by_the_token_limit(capsys: pytest.CaptureFixture[str]) -> None:
    from llama32_native.cli import ChatLoop

    out = io.StringIO()
    ChatLoop(_FakeChatModel(n_answer=10), {"max_new_tokens": 3}).run(io.StringIO("a\n"), out)
    assert out.getvalue() == "<1001><1001><1001> [...]\n"
    assert "reply cut at the limit of 3 tokens" in capsys.readouterr().err
    out = io.StringIO()
    ChatLoop(_FakeChatModel(n_answer=2), {"max_new_tokens": 3}).run(io.StringIO("a\n"), out)  # ended by itself
    assert out.getvalue() == "<1001><1001>\n"
    assert "cut" not in capsys.readouterr().err


def test_chat_cut_mark_on_a_real_model(tiny_dir: Path) -> None:
    r = run_cli("chat", str(tiny_dir), "-n", "3", "--greedy", "-q", stdin="hi\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip("\n").endswith("[...]") and "reply cut at the limit of 3 tokens" in r.stderr


def test_chat_uses_readline_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readline = pytest.importorskip("readline")
    from llama32_native.cli import _readline_input

    history = tmp_path / "history"
    readline.clear_history()
    readline.add_history("an earlier question")
    readline.write_history_file(str(history))
    readline.clear_history()
    monkeypatch.setattr("builtins.input", lambda prompt="": "typed")
    read = _readline_input(str(history))
    assert readline.get_history_item(readline.get_current_history_length()) == "an earlier question"
    assert read() == "typed\n"
    assert "an earlier question" in history.read_text()


# ---------------------------------------------------------------------- quantize
def test_quantize_then_load(tiny_dir: Path, tmp_path: Path) -> None:
    dst = tmp_path / "tiny-q8_0.safetensors"
    r = run_cli("quantize", str(tiny_dir), str(dst), "--quant", "q8_0")
    assert r.returncode == 0, r.stderr
    assert dst.is_file() and "wrote" in r.stderr
    info = run_cli("info", str(dst), "--json", "-q")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["model"]["quant"] == "q8_0"
    gen = run_cli("generate", str(dst), "Hi", "-n", "3", "--greedy", "-q")
    assert gen.returncode == 0 and gen.stdout.strip()
    again = run_cli("quantize", str(tiny_dir), str(dst), "--quant", "q8_0")
    assert again.returncode == 1 and "exists" in again.stderr


# ---------------------------------------------------------------------- errors and exit codes
def test_error_exit_codes(tiny_dir: Path, tmp_path: Path) -> None:
    missing = run_cli("generate", str(tmp_path / "nope"), "x")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in missing.stderr
    shown = run_cli("--traceback", "generate", str(tmp_path / "nope"), "x")
    assert shown.returncode == 1 and "Traceback" in shown.stderr and "ModelNotFoundError" in shown.stderr
    bad_param = run_cli("generate", str(tiny_dir), "x", "--temperature", "-1")
    assert bad_param.returncode == 1 and "temperature" in bad_param.stderr
    too_long = run_cli("generate", str(tiny_dir), "x", "-n", "5000", "--ctx", "64", "-q")
    assert too_long.returncode == 1 and too_long.stderr.startswith("error: ")
    bad_file = tmp_path / "garbage.safetensors"
    bad_file.write_bytes(b"\xff" * 64)
    assert run_cli("info", str(bad_file)).returncode == 1
    assert run_cli("frobnicate").returncode == 2
    assert run_cli("generate", str(tiny_dir)).returncode == 2
    assert run_cli("generate", str(tiny_dir), "x", "--quant", "q3_k").returncode == 2


def test_context_length_default_is_shared_and_too_long_is_an_error(tiny_dir: Path) -> None:
    import llama32_native as l32
    from llama32_native import cli
    from llama32_native.model import DEFAULT_CONTEXT_LENGTH

    args = cli.build_parser().parse_args(["generate", str(tiny_dir), "x"])
    assert args.ctx is None  # the CLI leaves it to the library: one default
    model = l32.Model.from_pretrained(tiny_dir, quant="f32")
    try:
        assert model.context_length == min(DEFAULT_CONTEXT_LENGTH, model.config.n_ctx) == 2048
    finally:
        model.close()
    r = run_cli("info", str(tiny_dir), "--quant", "f32", "--json", "-q")
    assert json.loads(r.stdout)["model"]["context_length"] == 2048
    with pytest.raises(l32.InvalidArgumentError, match="maximum of 2048"):
        l32.Model.from_pretrained(tiny_dir, quant="f32", context_length=10_000_000)
    too_big = run_cli("generate", str(tiny_dir), "x", "--ctx", "10000000", "-q")
    assert too_big.returncode == 1 and "maximum of 2048" in too_big.stderr


def test_pull_list_rm(tmp_path: Path) -> None:
    env = {"LLAMA32_NATIVE_CACHE": str(tmp_path / "cache"), "HF_HUB_CACHE": str(tmp_path / "hf"),
           "HF_HUB_OFFLINE": "1"}
    offline = run_cli("pull", "smollm2", env=env)
    assert offline.returncode == 1 and "pull smollm2" in offline.stderr
    empty = run_cli("list", env=env)
    assert empty.returncode == 0 and empty.stdout == "" and "no models" in empty.stderr
    gguf = os.environ.get("LLAMA32_SMOLLM2_GGUF")
    if not gguf or not os.path.isfile(gguf):
        pytest.skip("LLAMA32_SMOLLM2_GGUF is not set")
    from llama32_native import hub

    target = Path(tmp_path / "cache" / "models" / hub.DEMO.package / Path(hub.DEMO.member).name)
    target.parent.mkdir(parents=True)
    os.symlink(gguf, target)
    pulled = run_cli("pull", "smollm2", env=env)
    assert pulled.returncode == 0 and pulled.stdout.strip() == str(target)
    listed = run_cli("list", "--json", env=env)
    assert [m["name"] for m in json.loads(listed.stdout)] == ["smollm2"]
    assert run_cli("rm", "smollm2", env=env).returncode == 0
    assert not target.exists()
    again = run_cli("rm", "smollm2", env=env)
    assert again.returncode == 1 and "not in the model cache" in again.stderr


def test_bench_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    import llama32_native
    from llama32_native import cli

    seen = []
    fake = types.ModuleType("llama32_native.bench")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "llama32_native.bench", fake)
    monkeypatch.delattr(llama32_native, "bench", raising=False)  # imported already by another test
    assert cli.main(["bench", "--model", "x", "-n", "3"]) == 0
    assert seen == [["--model", "x", "-n", "3"]]
    monkeypatch.setitem(sys.modules, "llama32_native.bench", None)  # import fails like a missing module
    assert cli.main(["bench"]) == 1


# ---------------------------------------------------------------------- serve
def test_serve_drains_on_sigterm(tiny_dir: Path) -> None:
    import signal
    import socket
    import threading
    import time

    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = subprocess_env()
    proc = subprocess.Popen([sys.executable, "-m", "llama32_native", "serve", str(tiny_dir), "--port", str(port),
                             "--api-key", "k", "--log-level", "warning", "--ctx", "512"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.1)
        lines: list[str] = []
        started = threading.Event()

        def stream() -> None:
            body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 200, "stream": True}
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30,
                              headers={"authorization": "Bearer k"}) as r:
                for line in r.iter_lines():
                    started.set()
                    lines.append(line)

        t = threading.Thread(target=stream)
        t.start()
        assert started.wait(20)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
        t.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0, proc.stderr.read()
    lines = [x for x in lines if x]
    assert lines and lines[-1] == "data: [DONE]"  # the in-flight stream was allowed to finish
