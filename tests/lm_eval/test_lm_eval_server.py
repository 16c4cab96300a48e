"""The cross-check: lm-eval's own `local-completions` client against a live `gpt1 serve` (GPT-1's tokenizer through
/tokenize) gives the numbers the in-process gpt1 model gives on the same task and examples."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from gpt1.lm_eval.run import run, task_manager
from shared_data import require_shared

LIMIT = 20
pytest.importorskip("tenacity", reason="lm-eval's API models (local-completions) need lm-eval[api]'s tenacity")


@pytest.fixture(scope="module")
def server(tiny):
    uvicorn = pytest.importorskip("uvicorn")
    from gpt1.serving.app import create_app

    model, tokenizer = tiny
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(
        uvicorn.Config(create_app(model, tokenizer, "tiny-lmeval", max_batch=8), port=port, log_level="warning")
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started:
        assert thread.is_alive() and time.time() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def test_local_completions_against_gpt1_serve_equals_the_gpt1_model(server, tiny_dir):
    from lm_eval import simple_evaluate

    data = {"sst2": str(require_shared("data", "glue", "SST-2"))}
    ours = run(
        str(tiny_dir), ["gpt1_sst2"], limit=LIMIT, task_data=data, model_args={"precision": "fp32"}, log_samples=True
    )
    args = {
        "base_url": server + "/v1/completions",
        "model": "tiny-lmeval",
        "tokenizer_backend": "remote",
        "max_length": 64,
    }
    manager = task_manager(["gpt1_sst2"], metadata={"gpt1_data": data, "gpt1_tokenizer": str(tiny_dir)})
    remote = simple_evaluate(
        model="local-completions",
        model_args=args,
        tasks=["gpt1_sst2"],
        limit=LIMIT,
        batch_size=4,
        task_manager=manager,
        log_samples=True,
    )
    assert remote["results"]["gpt1_sst2"]["acc,none"] == pytest.approx(ours["results"]["gpt1_sst2"]["acc,none"])

    def lls(results):
        samples = sorted(results["samples"]["gpt1_sst2"], key=lambda s: s["doc_id"])
        return [[ll for ll, _ in s["filtered_resps"]] for s in samples]

    assert len(lls(ours)) == LIMIT and all(len(x) == 2 for x in lls(ours))
    for a, b in zip(lls(remote), lls(ours), strict=True):
        assert a == pytest.approx(b, abs=1e-3)
