"""Driving the server's engine step by step in the test's own thread (a module, not conftest, as shared_data.py):
the continuous-batching tests of the server, the scoring rows and the int8 model share it."""

from __future__ import annotations

import torch

from gpt1.inference.sampling import SamplingParams
from gpt1.serving.engine import Engine, GenRequest


def engine_step(engine: Engine) -> None:
    """One turn of the engine's loop, in this thread: admit, prefill, decode a token for every row."""
    with torch.inference_mode():
        admitted = engine._take_admissible()
        if admitted:
            engine._prefill(admitted)
        if engine.active:
            engine._decode_step()


def run_alone(model, tokenizer, ids: list[int], params: SamplingParams, loop) -> list[int]:
    """The tokens (prompt + completion) one request gets from an engine of its own."""
    engine = Engine(model, tokenizer, max_batch=4)
    req = GenRequest([ids], params, 1, loop)
    engine.submit(req)
    while engine.active or engine.waiting:
        engine_step(engine)
    return req.choices[0].tokens
