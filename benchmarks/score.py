"""Examples scored per second on SST-2 (the task pack's gpt1_sst2) by `gpt1 lm-eval`'s model (the gpt1 adapter), by
lm-eval's `hf` backend on the same weights, and by `gpt1 serve` fed the requests lm-eval's `local-completions` sends.

    python benchmarks/score.py               # preset small (6 x 384), random weights, 200 sentences
    python benchmarks/score.py --quick       # preset tiny, 100 sentences: a few seconds
    python benchmarks/score.py --model DIR   # a saved model (its own tokenizer; HF format, as gpt1 saves it)

Both lm-eval backends score in float32 with the same batch size, timed around their `loglikelihood` call inside
lm-eval's own `simple_evaluate` (model loading and task building are outside the clock). `hf` tokenizes with
transformers' fast OpenAIGPT tokenizer (a BERT-style pre-split), not GPT-1's: the script counts the examples whose
requests it tokenizes differently. The server row posts the same token ids, `batch` prompts per request, one
request at a time (lm-eval's default num_concurrent=1).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import SHARED_VOCAB, make_model, start_server  # noqa: E402
from serve_score import score_remote  # noqa: E402
from train import cpu_features  # noqa: E402

SST2 = SHARED_VOCAB.parent / "glue" / "SST-2"


def timed(lm, clock: dict):
    """`lm` with its loglikelihood call timed into clock["s"]."""
    inner = lm.loglikelihood

    def loglikelihood(requests, disable_tqdm: bool = False):
        start = time.perf_counter()
        out = inner(requests, disable_tqdm=True)
        clock["s"] = time.perf_counter() - start
        clock["requests"] = [r.args for r in requests]
        return out

    lm.loglikelihood = loglikelihood
    return lm


def evaluate(lm, manager, limit: int) -> tuple[dict, dict]:
    import lm_eval.evaluator
    from lm_eval import simple_evaluate

    lm_eval.evaluator.add_env_info = lambda results: None  # torch's collect_env: seconds of subprocesses, untimed
    clock: dict = {}
    res = simple_evaluate(
        model=timed(lm, clock),
        tasks=["gpt1_sst2"],
        limit=limit,
        task_manager=manager,
        bootstrap_iters=0,
        log_samples=True,
    )
    return res, clock


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="a saved model dir (default: a random-weight preset)")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--examples", type=int, default=200, help="SST-2 sentences (two requests each)")
    ap.add_argument("--batch", type=int, default=16, help="batch size of both backends and prompts per request")
    ap.add_argument("--threads", type=int, default=None, help="OMP threads (default: torch's)")
    ap.add_argument("--no-server", action="store_true", help="skip the gpt1 serve row")
    ap.add_argument("--quick", action="store_true", help="preset tiny, 100 sentences")
    args = ap.parse_args()
    if args.quick:
        args.preset, args.examples = "tiny", 100
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import torch
    import transformers

    try:
        from lm_eval.models.huggingface import HFLM
    except ModuleNotFoundError as e:  # lm-eval's hf backend is its `hf` extra
        raise SystemExit(f"lm-eval's hf backend needs {e.name}: pip install 'lm-eval[hf]'") from None

    from gpt1.lm_eval import GPT1LM
    from gpt1.lm_eval.run import task_manager

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or make_model(args.preset, SHARED_VOCAB, Path(tmp) / "model")
        metadata = {"gpt1_data": {"sst2": str(SST2)}, "pretrained": str(model_dir)}
        manager = task_manager(["gpt1_sst2"], metadata=metadata)
        ours = GPT1LM(pretrained=str(model_dir), batch_size=args.batch, precision="fp32", device="cpu")
        hf_model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
        hf_tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)  # the fast one, as lm-eval's default
        # lm-eval's hf backend needs a prefix token, and GPT-1 has none: <unk>, which SST-2's contexts never use.
        hf = HFLM(
            pretrained=hf_model,
            tokenizer=hf_tokenizer,
            batch_size=args.batch,
            prefix_token_id=hf_tokenizer.unk_token_id,
        )
        evaluate(ours, manager, 4)  # first-call costs (spaCy, kernels) out of the measured runs
        evaluate(hf, manager, 4)
        ours_res, ours_clock = evaluate(ours, manager, args.examples)
        hf_res, hf_clock = evaluate(hf, manager, args.examples)

        # The token ids each backend scores, per example (its two requests), and the requests as gpt1 sends them.
        requests = ours_clock["requests"]
        by_doc = [requests[i : i + 2] for i in range(0, len(requests), 2)]
        differ = sum(
            any(ours.tok_encode(c + x) != hf.tokenizer.encode(c + x, add_special_tokens=False) for c, x in pair)
            for pair in by_doc
        )
        seqs = [ctx + cont for ctx, cont in (ours._encode_pair(c, x) for c, x in requests)]
        server_s = None
        if not args.no_server:
            proc, url = start_server(model_dir, args.batch, max_queue=8, threads=args.threads)
            try:
                asyncio.run(score_remote(url, seqs[:2], 2, 1))  # warm-up
                _, server_s = asyncio.run(score_remote(url, seqs, args.batch, 1))
            finally:
                proc.terminate()
                proc.wait(timeout=15)

    def accuracy(res):
        return res["results"]["gpt1_sst2"]["acc,none"]

    n = args.examples
    tokens = sum(len(s) for s in seqs)
    print(f"# score: gpt1_sst2, {n} sentences ({len(seqs)} loglikelihood requests, {tokens} tokens), batch "
          f"{args.batch}, float32; torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu_features()}")  # fmt: skip
    print(f"{'':34}{'examples/s':>12}{'requests/s':>12}{'tokens/s':>10}{'x hf':>7}{'accuracy':>10}")
    rows = [("gpt1 lm-eval (adapter)", ours_clock["s"], accuracy(ours_res)), ("lm-eval hf", hf_clock["s"], None)]
    if server_s is not None:
        rows.append(("gpt1 serve (local-completions)", server_s, None))
    for name, seconds, acc in rows:
        http = -(-len(seqs) // args.batch) / seconds if name.startswith("gpt1 serve") else len(seqs) / seconds
        acc = accuracy(hf_res) if name == "lm-eval hf" else acc
        acc_text = f"{acc:>10.3f}" if acc is not None else f"{'':>10}"
        print(f"{name:34}{n / seconds:>12.1f}{http:>12.1f}{tokens / seconds:>10.0f}{hf_clock['s'] / seconds:>7.2f}{acc_text}")  # fmt: skip
    print(f"examples tokenized differently by hf's fast tokenizer: {differ}/{n}")
    print("(server requests/s: HTTP requests of up to `batch` prompts each)")


if __name__ == "__main__":
    main()
