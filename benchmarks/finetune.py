"""Fine-tuning speed: our multiple-choice head + auxiliary LM loss vs transformers' OpenAIGPTDoubleHeadsModel.

Both run in this process on the same random weights and the same ROCStories-shaped batch (B examples x 2 choices,
right-padded), in fp32 on CPU (or CUDA if present). Two measurements per model size:
  score: `multiple_choice_scores` vs `OpenAIGPTDoubleHeadsModel(...).mc_logits`, no grad (evaluation);
  train: one forward + backward of task loss + 0.5 * LM loss (the paper's L3) vs DoubleHeads with mc_labels + labels.
The outputs are checked equal before timing. Usage: python benchmarks/finetune.py [--quick] [--sizes mini,small]
"""

from __future__ import annotations

import argparse
import time

import torch

from gpt1 import GPT, GPT1Config
from gpt1.checkpoint import ours_to_hf
from gpt1.model.heads import finetune_loss, multiple_choice_scores


def reference(model: GPT):
    import transformers

    c = model.config
    hf = transformers.OpenAIGPTDoubleHeadsModel(
        transformers.OpenAIGPTConfig(
            vocab_size=c.vocab_size,
            n_positions=c.n_positions,
            n_embd=c.n_embd,
            n_layer=c.n_layer,
            n_head=c.n_head,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            summary_first_dropout=0.0,
        )
    )
    state = {
        k.replace("task_head.", "multiple_choice_head.summary."): v for k, v in ours_to_hf(model.state_dict()).items()
    }
    hf.load_state_dict(state, strict=False)
    hf.tie_weights()
    return hf.to(model.device)


def timeit(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]  # the median: robust to a noisy, shared machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny and mini only, fewer repeats (about a minute)")
    ap.add_argument(
        "--sizes", default=None, help="comma-separated presets (default: mini,small,gpt1; quick: tiny,mini)"
    )
    ap.add_argument("--batch", type=int, default=8, help="examples per batch (x 2 choices)")
    ap.add_argument("--seq", type=int, default=80, help="longest sequence in the batch (ROCStories is ~60-90)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = (args.sizes or ("tiny,mini" if args.quick else "mini,small,gpt1")).split(",")
    repeats = args.repeats or (3 if args.quick else 5)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    for size in sizes:
        torch.manual_seed(0)
        model = GPT(
            GPT1Config.from_preset(
                size,
                vocab_size=40481,
                num_labels=1,
                resid_pdrop=0.0,
                embd_pdrop=0.0,
                attn_pdrop=0.0,
                summary_first_dropout=0.0,
            )
        ).to(device)
        hf = reference(model)
        B, T = args.batch, min(args.seq, model.config.n_positions)
        g = torch.Generator().manual_seed(1)
        lengths = torch.randint(T // 2, T + 1, (B, 2), generator=g)
        mask = (torch.arange(T)[None, None] < lengths[..., None]).long()
        ids = (torch.randint(0, 40478, (B, 2, T), generator=g) * mask).to(device)
        mask, extract = mask.to(device), (lengths - 1).to(device)
        targets = torch.randint(0, 2, (B,), generator=g).to(device)
        labels = ids.masked_fill(mask == 0, -100)
        batch = {"input_ids": ids, "attention_mask": mask, "extract_positions": extract, "targets": targets}

        model.eval(), hf.eval()
        with torch.no_grad():
            ours, ref = multiple_choice_scores(model, ids, extract), hf(input_ids=ids, mc_token_ids=extract).mc_logits
        err = (ours - ref).abs().max().item()
        assert err < 1e-3, f"{size}: scores differ by {err}"

        def our_score():
            with torch.no_grad():
                multiple_choice_scores(model, ids, extract)

        def ref_score():
            with torch.no_grad():
                hf(input_ids=ids, mc_token_ids=extract)

        def our_train():
            loss, _ = finetune_loss(model, batch, "multiple_choice", lm_coef=0.5)
            loss.backward()
            model.zero_grad(set_to_none=True)

        def ref_train():
            out = hf(input_ids=ids, mc_token_ids=extract, labels=labels, mc_labels=targets)
            (out.mc_loss + 0.5 * out.loss).backward()
            hf.zero_grad(set_to_none=True)

        model.train(), hf.train()
        for name, ours_fn, ref_fn in (("score", our_score, ref_score), ("train", our_train, ref_train)):
            t_ours, t_ref = timeit(ours_fn, repeats), timeit(ref_fn, repeats)
            rows.append((size, name, B * 2 * T, t_ours, t_ref))
        model = hf = None  # free both before the next size loads

    print(
        f"\ndevice {device}, threads {torch.get_num_threads()}, batch {args.batch} x 2 choices x <= {args.seq} tokens, "
        f"median of {repeats}"
    )
    print(f"{'preset':<7} {'what':<6} {'tokens':>7} {'gpt1 ms':>9} {'transformers ms':>16} {'speed-up':>9}")
    for size, name, tokens, a, b in rows:
        print(f"{size:<7} {name:<6} {tokens:>7} {a * 1e3:>9.1f} {b * 1e3:>16.1f} {b / a:>8.2f}x")


if __name__ == "__main__":
    main()
