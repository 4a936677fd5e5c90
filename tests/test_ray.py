"""Ray integration on real Ray: LlamaPredictor on Ray Data and build_app on Ray Serve, on a two-node local cluster.

Contract: the base package never imports Ray; with Ray installed, rows through map_batches (two actors, one per
node) equal local greedy generation row for row, a killed actor loses and repeats no row, and the Serve app answers
the official openai client (streamed and not) with the server's limits, key and /score, also after a replica is
killed. Bounded: SmolLM2 with a 1024-token context and a few new tokens; the whole module takes about two minutes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest
from conftest import subprocess_env

try:
    import ray
except ImportError:
    ray = None

SMOL = os.environ.get("LLAMA32_SMOLLM2_GGUF", "")
needs_ray = pytest.mark.skipif(ray is None, reason="ray is not installed (pip install '.[ray]' runs these tests)")
needs_smol = pytest.mark.skipif(not os.path.isfile(SMOL), reason="no SmolLM2 GGUF: set LLAMA32_SMOLLM2_GGUF")
CTX, NEW = 1024, 8
LOAD = {"context_length": CTX}
SUBJECTS = ["cats", "the sea", "Paris", "a robot", "winter", "music", "bread", "the moon"]
PROMPTS = [f"{lead} {s}" for lead in ("Write about", "Tell me about", "A fact about", "Once upon a time,")
           for s in SUBJECTS]  # 32
MESSAGES = [{"role": "user", "content": "Name a color."}]


def test_base_package_does_not_import_ray() -> None:
    code = ("import sys, llama32_native, llama32_native.cli, llama32_native.model, llama32_native.server\n"
            "bad = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, env=subprocess_env(), timeout=120)


@pytest.fixture(scope="module")
def local_model() -> Any:
    import llama32_native as l32

    if not os.path.isfile(SMOL):
        pytest.skip("no SmolLM2 GGUF: set LLAMA32_SMOLLM2_GGUF")
    with l32.Model.from_pretrained(SMOL, threads=1, max_sequences=4, **LOAD) as m:
        yield m


def greedy(model: Any, prompt: Any, new: int = NEW) -> str:
    return model.generate(prompt, max_new_tokens=new, do_sample=False)


# ---------------------------------------------------------------------- the predictor without a cluster
@needs_ray
@needs_smol
def test_predictor_numpy_and_pandas_batches(local_model) -> None:
    import pandas as pd
    from llama32_native.ray import OUTPUT_COLUMNS, LlamaPredictor

    p = LlamaPredictor(SMOL, threads=1, max_new_tokens=NEW, do_sample=False, **LOAD)
    batch = {"id": np.arange(4), "prompt": np.array([PROMPTS[0], PROMPTS[1], "x" * 8000, None], dtype=object),
             "sampling": np.array([None, {"max_new_tokens": 3.0, "seed": None}, None, None], dtype=object)}
    out = p(batch)
    assert set(out) == {"id", "prompt", "sampling", *OUTPUT_COLUMNS} and list(out["id"]) == [0, 1, 2, 3]
    assert out["generated_text"][0] == greedy(local_model, PROMPTS[0])
    assert out["generated_text"][1] == greedy(local_model, PROMPTS[1], 3)  # 3.0 (Arrow's int with nulls) is 3
    assert out["completion_tokens"][1] <= 3 and out["prompt_tokens"][0] > 0
    assert list(out["finish_reason"][2:]) == ["error", "error"] and out["error"][0] is None
    assert "exceeds the context" in out["error"][2] and "neither a prompt nor messages" in out["error"][3]
    frame = p(pd.DataFrame({"messages": [MESSAGES], "sampling": ['{"max_new_tokens": 4}']}))
    assert isinstance(frame, pd.DataFrame)
    assert frame["generated_text"][0] == local_model.chat(MESSAGES, max_new_tokens=4, do_sample=False)
    with pytest.raises(ValueError, match="'prompt' or a 'messages' column"):
        p({"text": np.array(["x"], dtype=object)})


@needs_ray
@needs_smol
def test_predictor_rejects_bad_defaults_once() -> None:
    import llama32_native as l32
    from llama32_native.ray import LlamaPredictor

    with pytest.raises(l32.Error, match="max_new_tokens"):
        LlamaPredictor(SMOL, threads=1, max_tokens=8, **LOAD)  # OpenAI's name: told ours, before any row


# ---------------------------------------------------------------------- a two-node cluster on this machine
@pytest.fixture(scope="module")
def cluster() -> Any:
    """Two Ray nodes of one CPU each (no dashboard, small object stores): one actor or replica per node."""
    if ray is None:
        pytest.skip("ray is not installed (pip install '.[ray]' runs these tests)")
    from ray.cluster_utils import Cluster

    store = 80 * 2**20
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": store,
                                                      "include_dashboard": False})
    c.add_node(num_cpus=1, object_store_memory=store)
    ray.init(address=c.address, log_to_driver=False)
    c.wait_for_nodes()
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors below are defined in this file
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def _predictor_on_node() -> type:
    from llama32_native.ray import LlamaPredictor

    class PredictorOnNode(LlamaPredictor):
        """LlamaPredictor that appends the node it was placed on to a file when it starts."""

        def __init__(self, nodes_file: str, **kw: Any) -> None:
            super().__init__(**kw)
            with open(nodes_file, "a") as f:
                f.write(ray.get_runtime_context().get_node_id() + "\n")

    return PredictorOnNode


def _killed_once() -> type:
    from llama32_native.ray import LlamaPredictor

    class KilledOnce(LlamaPredictor):
        """The first actor to reach its second batch SIGKILLs itself there (as the OOM killer or a lost node)."""

        def __init__(self, marker: str, **kw: Any) -> None:
            super().__init__(**kw)
            self.marker, self.batches = marker, 0
            with open(marker + ".starts", "a") as f:
                f.write(f"{os.getpid()}\n")

        def __call__(self, batch: Any) -> Any:
            self.batches += 1
            if self.batches == 2:
                try:
                    fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    pass
                else:
                    os.write(fd, json.dumps([int(i) for i in batch["id"]]).encode())
                    os.close(fd)
                    os.kill(os.getpid(), signal.SIGKILL)
            return super().__call__(batch)

    return KilledOnce


@needs_smol
def test_map_batches_two_actors_equal_local_greedy(cluster, local_model, tmp_path) -> None:
    from llama32_native.ray import map_batches_options

    rows: list[dict[str, Any]] = [{"id": i, "prompt": p} for i, p in enumerate(PROMPTS)]
    rows += [{"id": 32, "messages": MESSAGES},  # chat
             {"id": 33, "prompt": PROMPTS[0], "sampling": {"max_new_tokens": 3}},  # per-row option
             {"id": 34, "prompt": "x" * 8000},  # too long for the context: an error row, not a failed job
             {"id": 35, "prompt": PROMPTS[1], "sampling": {"max_tokens": 3}}]  # bad option: an error row
    ds = ray.data.from_items(rows)
    opts = map_batches_options(SMOL, concurrency=2, threads=1, batch_size=8, max_new_tokens=NEW, do_sample=False,
                               max_sequences=8, **LOAD)
    opts["fn_constructor_kwargs"]["nodes_file"] = nodes = str(tmp_path / "nodes")
    out = sorted(ds.map_batches(_predictor_on_node(), **opts).take_all(), key=lambda r: r["id"])
    assert [r["id"] for r in out] == list(range(36))
    for r, p in zip(out, PROMPTS):
        assert r["generated_text"] == greedy(local_model, p), r
        assert r["finish_reason"] in ("stop", "length") and r["error"] is None
        assert r["prompt_tokens"] == len(local_model.prompt_ids(p)) and 1 <= r["completion_tokens"] <= NEW
    assert out[32]["generated_text"] == local_model.chat(MESSAGES, max_new_tokens=NEW, do_sample=False)
    assert out[33]["generated_text"] == greedy(local_model, PROMPTS[0], 3)
    assert out[34]["finish_reason"] == "error" and "exceeds the context" in out[34]["error"]
    assert out[35]["finish_reason"] == "error" and "max_new_tokens" in out[35]["error"]
    with open(nodes) as f:
        assert len(set(f.read().split())) == 2  # num_cpus=threads=1 on 1-CPU nodes: one actor on each node


@needs_smol
def test_killed_actor_every_row_exactly_once(cluster, local_model, tmp_path) -> None:
    from llama32_native.ray import map_batches_options

    marker = str(tmp_path / "killed")
    n, new = 24, 4
    prompts = [PROMPTS[i % len(PROMPTS)] + f" ({i})" for i in range(n)]
    ds = ray.data.from_items([{"id": i, "prompt": p} for i, p in enumerate(prompts)])
    opts = map_batches_options(SMOL, concurrency=2, threads=1, batch_size=3, max_new_tokens=new, do_sample=False,
                               max_sequences=4, **LOAD)
    opts["fn_constructor_kwargs"]["marker"] = marker
    out = ds.map_batches(_killed_once(), **opts).take_all()
    with open(marker) as f:
        killed = json.load(f)  # the batch that was in the actor when it died
    with open(marker + ".starts") as f:
        starts = f.read().split()
    assert killed and len(starts) >= 3  # two actors, at least one restart
    assert sorted(r["id"] for r in out) == list(range(n))  # every row, exactly once
    for r in out:
        assert r["generated_text"] == greedy(local_model, prompts[r["id"]], new) and r["error"] is None


# ---------------------------------------------------------------------- Ray Serve
KEY = "test-key"


@pytest.fixture(scope="module")
def served(cluster) -> Any:
    from llama32_native.ray import build_app
    from ray import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
    app = build_app(model=SMOL, threads=1, num_replicas=2, max_batch=2, api_key=KEY, max_tokens=64,
                    model_name="smol", **LOAD)
    serve.run(app, name="llama", route_prefix="/")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def _client(url: str) -> Any:
    import openai

    return openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def _chat(client: Any, stream: bool = False) -> str:
    kw = {"model": "smol", "messages": MESSAGES, "max_tokens": NEW, "temperature": 0}
    if not stream:
        return client.chat.completions.create(**kw).choices[0].message.content
    return "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **kw)
                   if c.choices)


@needs_smol
def test_serve_answers_openai_client(served, local_model) -> None:
    client = _client(served)
    want = local_model.chat(MESSAGES, max_new_tokens=NEW, do_sample=False)
    assert _chat(client) == want
    assert _chat(client, stream=True) == want
    done = client.completions.create(model="smol", prompt=PROMPTS[0], max_tokens=NEW, temperature=0)
    assert done.choices[0].text == greedy(local_model, PROMPTS[0])
    assert [m.id for m in client.models.list().data] == ["smol"]


@needs_smol
def test_serve_keeps_limits_key_and_score(served, local_model) -> None:
    import httpx
    import openai

    auth = {"authorization": f"Bearer {KEY}"}
    assert httpx.get(served + "/health", timeout=30).json()["status"] == "ok"
    assert httpx.post(served + "/v1/completions", json={"prompt": "hi"}, timeout=30).status_code == 401
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        _client(served).completions.create(model="smol", prompt="hi", max_tokens=65)
    body = {"input_data": {"input_string": [PROMPTS[2]], "parameters": {"max_new_tokens": NEW, "do_sample": False}}}
    r = httpx.post(served + "/score", json=body, headers=auth, timeout=60)
    assert r.status_code == 200 and r.json() == [{"0": greedy(local_model, PROMPTS[2])}]


@needs_smol
def test_serve_answers_after_a_replica_is_killed(served, local_model) -> None:
    from ray import serve

    client = _client(served)
    want = local_model.chat(MESSAGES, max_new_tokens=NEW, do_sample=False)
    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True) if "SERVE_REPLICA" in a["name"]]
    assert len(replicas) == 2
    ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]), no_restart=True)
    for i in range(6):  # every request after the kill is answered (the other replica, then a new one)
        assert _chat(client, stream=bool(i % 2)) == want
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # Serve starts a replacement replica
        names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "SERVE_REPLICA" in a["name"]}
        status = serve.status().applications["llama"].status
        if len(names) == 2 and replicas[0]["name"] not in names and status == "RUNNING":
            break
        time.sleep(1)
    else:
        pytest.fail("no replacement replica within 90 s")
    assert _chat(client) == want


@needs_smol
def test_cli_serve_ray(cluster, local_model) -> None:
    import httpx
    from ray import serve

    serve.shutdown()  # the app above holds the route; the CLI starts Serve again on its own port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "llama32_native", "serve", "--ray", SMOL, "--port", str(port), "--threads", "1",
           "--ctx", str(CTX), "--max-batch", "2", "--api-key", KEY, "--model-name", "smol", "-q"]
    proc = subprocess.Popen(cmd, env=subprocess_env(RAY_ADDRESS=cluster.address), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve --ray did not answer within 120 s"
            time.sleep(1)
        assert _chat(_client(f"http://127.0.0.1:{port}")) == local_model.chat(MESSAGES, max_new_tokens=NEW,
                                                                               do_sample=False)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0  # Ctrl-C: the app is deleted, the command exits 0
    assert "llama32-native" not in serve.status().applications


# ---------------------------------------------------------------------- the builder as Ray's CLI calls it
@needs_ray
def test_serve_run_builder_takes_text_options() -> None:
    import llama32_native as l32
    from llama32_native.ray import build_app
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    args = {"model": "/models/x.gguf", "threads": "2", "max_batch": "4", "api_key": "k", "max_queue": "3",
            "autoscaling_config": '{"min_replicas": 1, "max_replicas": 3}', "num_replicas": "auto"}
    app = call_user_app_builder_with_args_if_necessary(build_app, args)
    dep = app._bound_deployment
    assert dep.ray_actor_options["num_cpus"] == 2
    assert dep._deployment_config.autoscaling_config.max_replicas == 3
    assert dep._deployment_config.max_ongoing_requests == 4  # = max_batch: a replica decodes all it holds
    model, threads, load, server, host = dep.init_args
    assert (model, threads, load["max_sequences"], host) == ("/models/x.gguf", 2, 5, "127.0.0.1")
    assert server == {"api_key": "k", "max_queue": 3, "model_name": "x.gguf"}
    with pytest.raises(l32.InvalidArgumentTypeError, match="unknown option 'max_tokenz'"):
        build_app(model="m", max_tokenz=3)
    with pytest.raises(l32.InvalidArgumentError, match="max_queue"):
        build_app(model="m", max_queue=0)
