"""Ray integration: batch generation on Ray Data (LlamaPredictor) and the OpenAI server as a Ray Serve app (build_app).

Contract: `import llama32_native` never imports Ray; this module needs the extra (pip install
'llama32_native[ray]'). Each Ray Data actor or Serve replica loads its own Model once and runs it on `threads`
threads, requesting num_cpus=threads. A batch's rows are decoded together (Model.complete_batch); a row that
cannot run gets an `error` value instead of failing the job. The Serve app is the server's own create_app (one
implementation of the routes, limits and scheduler). Running on a cluster: docs/RAY.md.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, Callable, Union

import numpy as np

try:
    import ray
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"llama32_native.ray needs Ray ({e.name} is missing): pip install 'llama32_native[ray]'") from e

from .errors import Error, InvalidArgumentError, InvalidArgumentTypeError
from .model import Model
from .sampling import SamplingParams

__all__ = [
    "LOAD_OPTIONS",
    "OUTPUT_COLUMNS",
    "LlamaPredictor",
    "build_app",
    "generate_dataset",
    "load_model",
    "map_batches_options",
    "run_server",
]

# A model: anything Model.from_pretrained takes, or a zero-argument function building one (called in each actor).
ModelSource = Union[str, "os.PathLike[str]", Callable[[], Model]]
LOAD_OPTIONS = ("quant", "context_length", "max_sequences", "kv_cache")
OUTPUT_COLUMNS = ("generated_text", "prompt_tokens", "completion_tokens", "finish_reason", "error")
# Integer options: Arrow gives an int column with missing values to NumPy as floats (3 -> 3.0), turned back here.
INT_OPTIONS = frozenset({f.name for f in dataclasses.fields(SamplingParams) if str(f.type).split(" ")[0] == "int"}
                        | {"logprobs", "top_logprobs", "num_speculative_tokens"})


def load_model(model: ModelSource, threads: int = 1, **load: Any) -> Model:
    """The Model of one actor or replica: from_pretrained(model, threads=..., **load), or model() for a function."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InvalidArgumentError(f"threads must be a positive int, got {threads!r}")
    unknown = set(load) - set(LOAD_OPTIONS)
    if unknown:
        raise InvalidArgumentTypeError(f"unknown model option(s) {sorted(unknown)} (known: {', '.join(LOAD_OPTIONS)})")
    load = {k: v for k, v in load.items() if v is not None}
    if callable(model):
        if load:
            raise InvalidArgumentError(f"{sorted(load)} apply to a model path; a model function builds its own Model")
        built = model()
        if not isinstance(built, Model):
            raise InvalidArgumentTypeError(f"the model function returned {type(built).__name__}, not a Model")
        built.threads = threads
        return built
    if not isinstance(model, (str, os.PathLike)):
        raise InvalidArgumentTypeError(f"model must be a path or name, or a function returning a Model, got {model!r}")
    return Model.from_pretrained(model, threads=threads, progress=False, **load)


# ====================================================================== Ray Data
class LlamaPredictor:
    """A callable class for `Dataset.map_batches`: generates for each row of a batch, all rows decoded together.

    In: a `prompt` column (text or token ids) or a `messages` column (chat: a list of {"role", "content"}); when
    both exist, a row with messages is a chat. An optional `sampling` column holds per-row overrides of the
    default options (a dict, or its JSON text; None values are ignored). Out: the input columns plus
    `generated_text`, `prompt_tokens`, `completion_tokens`, `finish_reason` ("stop", "length" or "error") and
    `error` (None, or why the row could not run). Constructor: the model (load_model), `threads`, the loading
    options LOAD_OPTIONS, and default generation options under generate()'s names (max_new_tokens, do_sample, ...).
    """

    def __init__(self, model: ModelSource, *, threads: int = 1, quant: str | None = None,
                 context_length: int | None = None, max_sequences: int | None = None, kv_cache: str | None = None,
                 **options: Any) -> None:
        self.model = load_model(model, threads, quant=quant, context_length=context_length,
                                max_sequences=max_sequences, kv_cache=kv_cache)
        self.options = options
        self.model.generation([0], **options)  # bad defaults fail here, once, not on every row

    def __call__(self, batch: Any) -> Any:
        columns = _columns(batch)
        if "prompt" not in columns and "messages" not in columns:
            raise InvalidArgumentError(f"the dataset needs a 'prompt' or a 'messages' column, got {sorted(columns)}")
        n = len(next(iter(columns.values())))
        results: list[Any] = [None] * n
        groups: dict[bool, list[tuple[int, Any, dict[str, Any]]]] = {False: [], True: []}
        for i in range(n):
            try:
                chat, prompt = _row_input(columns, i)
                overrides = _row_options(columns["sampling"][i]) if "sampling" in columns else {}
                if overrides:  # validated here, so that a bad value fails its row and never the batch
                    self.model.generation([0], **{**self.options, **overrides})
            except (Error, TypeError, ValueError) as e:  # any bad row value fails its row, whoever raised
                results[i] = e if isinstance(e, Error) else InvalidArgumentError(str(e))
                continue
            groups[chat].append((i, prompt, overrides))
        for chat, rows in groups.items():
            if rows:
                done = self.model.complete_batch([r[1] for r in rows], per_prompt=[r[2] for r in rows], chat=chat,
                                                 errors="return", **self.options)
                for (i, _, _), r in zip(rows, done):
                    results[i] = r
        return _with_outputs(batch, columns, results)

    def __repr__(self) -> str:
        return f"LlamaPredictor({self.model!r}, options={self.options})"


def _columns(batch: Any) -> dict[str, Any]:
    if isinstance(batch, Mapping):  # batch_format="numpy": dict of arrays
        return dict(batch)
    if hasattr(batch, "columns") and hasattr(batch, "__getitem__"):  # pandas.DataFrame
        return {str(c): batch[c].to_numpy() for c in batch.columns}
    raise InvalidArgumentTypeError(f"unsupported batch type {type(batch).__name__} (use batch_format numpy or pandas)")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    """Arrow/NumPy values (arrays, numpy scalars, nested dicts) as plain Python values."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _row_input(columns: dict[str, Any], i: int) -> tuple[bool, Any]:
    """(is chat, prompt or messages) of row i."""
    if "messages" in columns and not _missing(messages := columns["messages"][i]):
        messages = _plain(messages)
        if not isinstance(messages, list):
            raise InvalidArgumentTypeError(f"messages must be a list of messages, got {type(messages).__name__}")
        return True, messages
    if "prompt" in columns and not _missing(prompt := columns["prompt"][i]):
        return False, prompt if isinstance(prompt, str) else _plain(prompt)
    raise InvalidArgumentError("the row has neither a prompt nor messages")


def _row_options(value: Any) -> dict[str, Any]:
    if _missing(value):
        return {}
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError as e:
            raise InvalidArgumentError(f"the sampling column holds invalid JSON: {e}") from None
    value = _plain(value)
    if not isinstance(value, dict):
        raise InvalidArgumentTypeError(f"the sampling column must hold dicts, got {type(value).__name__}")
    return {k: int(v) if k in INT_OPTIONS and isinstance(v, float) and v.is_integer() else v
            for k, v in value.items() if not _missing(v)}


def _with_outputs(batch: Any, columns: dict[str, Any], results: list[Any]) -> Any:
    def col(f: Callable[[Any], Any], dtype: Any = object) -> np.ndarray:
        return np.array([f(r) for r in results], dtype=dtype)

    failed = [isinstance(r, Error) for r in results]
    out = {
        "generated_text": col(lambda r: "" if isinstance(r, Error) else r.text),
        "prompt_tokens": col(lambda r: 0 if isinstance(r, Error) else int(r.n_prompt), np.int64),
        "completion_tokens": col(lambda r: 0 if isinstance(r, Error) else len(r.tokens), np.int64),
        "finish_reason": np.array(["error" if f else r.finish_reason for f, r in zip(failed, results)], dtype=object),
        "error": np.array([str(r) if f else r.error for f, r in zip(failed, results)], dtype=object),
    }
    if isinstance(batch, Mapping):
        return {**columns, **out}
    return batch.assign(**out)


def map_batches_options(model: ModelSource, *, concurrency: int = 1, threads: int = 1, batch_size: int | None = None,
                        **predictor: Any) -> dict[str, Any]:
    """Keyword arguments for `ds.map_batches(LlamaPredictor, **map_batches_options(model, ...))`.

    `concurrency` actors of `threads` threads each (num_cpus=threads: Ray places as many actors on a node as it
    has cores for). `batch_size` defaults to the model's sequence slots (max_sequences, default 8), so a batch is
    one batched decode. `predictor`: LlamaPredictor's other options (loading options, generation defaults).

    Fault tolerance is Ray Data's default for actor pools, kept on purpose (docs/RAY.md): max_restarts=-1 (an actor
    that dies, its node lost or its process OOM-killed, is always recreated) and max_task_retries=-1 (the batches
    it held run again on the new actor), so every row comes out exactly once. A row the model cannot run never
    kills the actor: it becomes an error row.
    """
    for name, v in (("concurrency", concurrency), ("threads", threads)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InvalidArgumentError(f"{name} must be a positive int, got {v!r}")
    from ray.data import ActorPoolStrategy

    return {"fn_constructor_kwargs": {"model": model, "threads": threads, **predictor},
            "compute": ActorPoolStrategy(size=concurrency), "num_cpus": threads,
            "batch_size": batch_size or predictor.get("max_sequences") or 8, "batch_format": "numpy"}


def generate_dataset(ds: Any, model: ModelSource, **options: Any) -> Any:
    """`ds` with the generation columns added: ds.map_batches(LlamaPredictor, **map_batches_options(...))."""
    return ds.map_batches(LlamaPredictor, **map_batches_options(model, **options))


# ====================================================================== Ray Serve
SERVE_APP_NAME = "llama32-native"
DEPLOYMENT_OPTIONS = ("name", "num_replicas", "autoscaling_config", "max_ongoing_requests", "max_queued_requests",
                      "ray_actor_options", "max_replicas_per_node", "health_check_period_s", "health_check_timeout_s",
                      "graceful_shutdown_timeout_s", "graceful_shutdown_wait_loop_s", "placement_group_bundles",
                      "placement_group_strategy")


class LlamaServer:
    """One Serve replica: loads the model, then serves it with the server's create_app (its own scheduler)."""

    def __init__(self, model: ModelSource, threads: int, load: dict[str, Any], server: dict[str, Any],
                 bind_host: str) -> None:
        from .server import ServerConfig

        self.config = ServerConfig(**server)
        self.bind_host = bind_host
        self.model = load_model(model, threads, **load)
        if self.model.tokenizer is None:
            raise InvalidArgumentError("the model has no tokenizer; the server needs one")

    def __serve_build_asgi_app__(self) -> Any:  # Serve calls this after __init__, in the replica
        from .server import create_app

        app = create_app(self.model, self.config, bind_host=self.bind_host)
        self.scheduler = app.state.scheduler
        return app

    def check_health(self) -> None:
        """Serve's periodic health check: a dead scheduler thread makes Serve replace this replica."""
        scheduler = getattr(self, "scheduler", None)
        if scheduler is not None and not scheduler.healthy:
            raise RuntimeError("the scheduler thread is not running")


def _server_fields() -> dict[str, dataclasses.Field]:
    from .server import ServerConfig

    return {f.name: f for f in dataclasses.fields(ServerConfig)}


def _from_text(name: str, value: Any, kind: str) -> Any:
    """A value given as text (Ray's `serve run ... key=value`) converted to the option's type."""
    if not isinstance(value, str):
        return value
    if kind == "int":
        try:
            return int(value)
        except ValueError:
            raise InvalidArgumentError(f"{name} must be an integer, got {value!r}") from None
    if kind == "tuple":
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if kind == "json":  # num_replicas=2, autoscaling_config={"min_replicas": 1, ...}; "auto" stays text
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """build_app's keyword options -> (model loading, ServerConfig fields, Serve deployment options)."""
    load, server, deployment = {}, {}, {}
    fields = _server_fields()
    for name, value in options.items():
        if name in LOAD_OPTIONS:
            load[name] = _from_text(name, value, "int" if name in ("context_length", "max_sequences") else "str")
        elif name in fields:
            ftype = str(fields[name].type)
            kind = "tuple" if "tuple" in ftype else "int" if ftype.startswith("int") else "float" if "float" in ftype \
                else "str"
            value = _from_text(name, value, kind)
            if kind == "float" and isinstance(value, str):
                value = float(value)
            server[name] = value
        elif name in DEPLOYMENT_OPTIONS:
            deployment[name] = _from_text(name, value, "json")
        else:
            known = sorted({*LOAD_OPTIONS, *fields, *DEPLOYMENT_OPTIONS, "threads", "max_batch", "host"})
            raise InvalidArgumentTypeError(f"unknown option {name!r} (known: {', '.join(known)})")
    return load, server, deployment


def build_app(args: Mapping[str, Any] | None = None, /, **options: Any) -> Any:
    """A Ray Serve application serving `model` with the same routes, limits, API key and /score as the server.

    Python: `serve.run(build_app(model=path, threads=2, api_key=..., num_replicas=2))`; Ray's CLI:
    `serve run llama32_native.ray:build_app model=PATH threads=2` (values given as text are converted). Options:
    `model` (load_model), `threads` (per replica; its num_cpus), `max_batch` (sequences decoded together, the CLI's
    --max-batch), `host` (the address Serve's proxy binds, for the Host-header check as in `serve --host`), the
    loading options LOAD_OPTIONS, ServerConfig's fields (api_key, max_queue, max_tokens, ...), and Serve's
    deployment options (num_replicas, autoscaling_config, max_ongoing_requests, ray_actor_options, ...).
    """
    from ray import serve

    options = {**(dict(args) if args is not None else {}), **options}
    if "model" not in options:
        raise InvalidArgumentError("build_app needs model=... (a path or name, or a function returning a Model)")
    model = options.pop("model")
    threads = _from_text("threads", options.pop("threads", 1), "int")
    max_batch = _from_text("max_batch", options.pop("max_batch", 8), "int")
    bind_host = str(options.pop("host", "127.0.0.1"))
    load, server, deployment = _split_options(options)
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or not 1 <= max_batch <= 1024:
        raise InvalidArgumentError(f"max_batch must be in [1, 1024], got {max_batch!r}")
    load.setdefault("max_sequences", max_batch + 1)  # as `llama32-native serve`: one slot beyond the batch
    if isinstance(model, (str, os.PathLike)):
        server.setdefault("model_name", os.path.basename(os.path.normpath(os.fspath(model))))
    _check_server_config(server)
    # Serve's default (5 in flight per replica) would cap a replica's batch below max_batch; more than max_batch
    # would wait in the replica's queue when another replica may have a free slot, so the router holds them.
    deployment.setdefault("max_ongoing_requests", max_batch)
    actor = dict(deployment.pop("ray_actor_options", None) or {})
    actor.setdefault("num_cpus", threads)
    name = deployment.pop("name", "LlamaServer")
    cls = serve.deployment(serve.ingress()(LlamaServer), name=name)
    return cls.options(ray_actor_options=actor, **deployment).bind(model, threads, load, server, bind_host)


# Ray's `serve run module:build_app key=value` calls a builder with one argument, the dict of options.
build_app.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter("args", inspect.Parameter.POSITIONAL_ONLY)])


def _check_server_config(server: dict[str, Any]) -> None:
    """Validate the ServerConfig here, before any replica starts (a bad limit is an error, not a crash loop)."""
    from .server import ServerConfig

    try:
        ServerConfig(**server)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(str(e)) from None


def run_server(model: ModelSource, *, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> None:
    """Serve build_app(model=..., **options) on Ray until Ctrl-C (`llama32-native serve --ray`).

    Joins the cluster Ray finds ($RAY_ADDRESS, or one started on this machine by `ray start`), else starts a local
    one; Serve's proxy listens on host:port. On Ctrl-C or SIGTERM the application is deleted (its replicas stop).
    """
    from ray import serve

    app = build_app(model=model, host=host, **options)
    if not ray.is_initialized():
        ray.init(logging_level="warning")
    serve.start(http_options={"host": host, "port": port})
    if threading.current_thread() is threading.main_thread():  # SIGTERM (a service manager) stops it like Ctrl-C
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        serve.run(app, name=SERVE_APP_NAME, route_prefix="/")
        print(f"serving on http://{host}:{port} through Ray Serve (Ctrl-C to stop)", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.delete(SERVE_APP_NAME)
