"""`generate`, `generate_text` and `stream_text` against transformers' OpenAIGPT `generate` on the same random
weights (the small network of conftest.py), and their stopping, batching, limits and text-level behaviour."""

from __future__ import annotations

import pytest
import torch

from gpt1.inference.generate import generate, generate_text, stream_text


# ---- greedy and beam search against HF ------------------------------------------------------------------------------
def test_greedy_matches_hf_for_200_tokens(ours, hf, prompt):
    ids = prompt(7, 1)
    with torch.no_grad():
        ref = hf.generate(ids, max_new_tokens=200, do_sample=False, pad_token_id=0)
    got = ours.generate(ids, max_new_tokens=200)
    assert got.shape == ref.shape == (1, 207)
    assert len(set(got[0, 7:].tolist())) > 10  # a non-degenerate continuation, so the comparison means something
    assert torch.equal(got, ref)


def test_left_padded_batch_matches_each_prompt_alone(ours, hf, prompt):
    """Prompts of 3, 11 and 20 tokens in one left-padded batch give what HF gives for each prompt on its own.

    (HF 4.57's generate passes no position_ids to OpenAIGPT, so in a left-padded batch its positions shift with the
    padding; we use per-row positions, so padding never changes a row, and compare with unpadded HF runs.)
    """
    prompts = [prompt(n, 10 + n)[0] for n in (3, 11, 20)]
    T = max(len(p) for p in prompts)
    ids = torch.zeros(3, T, dtype=torch.long)
    mask = torch.zeros(3, T, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, T - len(p) :], mask[i, T - len(p) :] = p, 1
    got = generate(ours, ids, mask, max_new_tokens=200)
    assert torch.equal(got[:, :T], ids)
    for i, p in enumerate(prompts):
        with torch.no_grad():
            ref = hf.generate(p[None], max_new_tokens=200, do_sample=False, pad_token_id=0)
        assert torch.equal(got[i, T:], ref[0, len(p) :]), f"row {i}"


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(num_return_sequences=3, eos_token_id=[5, 17, 50, 311], length_penalty=0.7),
        dict(eos_token_id=[5, 17, 50, 311], length_penalty=2.0, no_repeat_ngram_size=2, repetition_penalty=1.3),
    ],
)
def test_beam_search_matches_hf_sequences_and_scores(ours, hf, prompt, kwargs):
    ids = torch.cat([prompt(6, 2), prompt(6, 3)])
    with torch.no_grad():
        ref = hf.generate(
            ids,
            max_new_tokens=40,
            num_beams=4,
            do_sample=False,
            pad_token_id=0,
            return_dict_in_generate=True,
            output_scores=True,
            **kwargs,
        )
    got = generate(ours, ids, max_new_tokens=40, num_beams=4, pad_token_id=0, return_dict_in_generate=True, **kwargs)
    assert torch.equal(got.sequences, ref.sequences)
    assert torch.allclose(got.sequences_scores, ref.sequences_scores, atol=1e-5, rtol=0)


# ---- sampling, stopping, batching ------------------------------------------------------------------------------------
def test_sampling_is_reproducible_with_a_seed(ours, prompt):
    ids = torch.cat([prompt(5, 7), prompt(5, 8)])
    kw = dict(max_new_tokens=30, do_sample=True, temperature=1.5, top_k=50, top_p=0.95, num_return_sequences=2)
    a, b = generate(ours, ids, seed=123, **kw), generate(ours, ids, seed=123, **kw)
    c = generate(ours, ids, seed=124, **kw)
    assert a.shape == (4, 35) and torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # the two samples of one prompt differ
    # top_k=1 leaves one candidate: sampling is then greedy.
    assert torch.equal(
        generate(ours, ids, max_new_tokens=15, do_sample=True, top_k=1, seed=1), generate(ours, ids, max_new_tokens=15)
    )


def test_rows_stop_independently_at_eos(ours, prompt):
    ids = torch.cat([prompt(6, 21), prompt(6, 22)])
    free = generate(ours, ids, max_new_tokens=30)
    row0, row1 = free[0, 6:].tolist(), free[1, 6:].tolist()
    # eos: a token row 0 generates (first at step j) that row 1 never does.
    j = next(j for j, t in enumerate(row0) if t not in row1 and t not in row0[:j] and j >= 2)
    out = generate(ours, ids, max_new_tokens=30, eos_token_id=row0[j], pad_token_id=999, return_dict_in_generate=True)
    seqs = out.sequences
    assert torch.equal(seqs[0, : 6 + j + 1], free[0, : 6 + j + 1]) and (seqs[0, 6 + j + 1 :] == 999).all()
    assert torch.equal(seqs[1], free[1])
    assert out.num_generated.tolist() == [j + 1, 30]


def test_all_rows_stopping_ends_early(ours, prompt):
    ids = prompt(6, 21)
    new = generate(ours, ids, max_new_tokens=30)[0, 6:].tolist()
    j = next(j for j, t in enumerate(new) if t not in new[:j] and j >= 2)  # first step emitting a fresh token
    assert generate(ours, ids, max_new_tokens=30, eos_token_id=new[j]).shape == (1, 6 + j + 1)


# ---- limits and bad values --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(top_p=0.0, do_sample=True), r"top_p=0.0 is outside the accepted range \(0, 1\]"),
        (dict(top_p=1.5, do_sample=True), r"top_p=1.5 is outside the accepted range \(0, 1\]"),
        (dict(temperature=-1.0, do_sample=True), r"temperature=-1.0 .* >= 0"),
        (dict(max_new_tokens=0), r"max_new_tokens=0 .* >= 1"),
        (dict(num_beams=0), r"num_beams=0 .* >= 1"),
        (dict(top_k=-1, do_sample=True), r"top_k=-1 .* >= 0 \(0 or None: no top-k\)"),  # 0 = off, as in the server
        (dict(temperature=float("nan"), do_sample=True), r"temperature=nan is invalid"),
        (dict(repetition_penalty=float("inf")), r"repetition_penalty=inf is invalid"),
        (dict(repetition_penalty=0.0), r"repetition_penalty=0.0 .* > 0"),
        (dict(num_return_sequences=2), r"num_return_sequences=2 needs do_sample"),
        (dict(num_beams=2, num_return_sequences=3), r"num_return_sequences=3 is more than num_beams=2"),
        (dict(eos_token_id=1000), r"eos_token_id=1000 is outside the vocabulary \[0, 1000\)"),
        (dict(stop="x"), r"stop strings need the tokenizer"),
        (dict(max_new_tokens=256), r"max_new_tokens=256 leaves no room .* at most 255"),
        (
            dict(max_new_tokens=250),
            r"prompt of 10 tokens \+ max_new_tokens=250 exceeds .* 256 positions.*truncate_left",
        ),
    ],
)
def test_bad_values_are_named(ours, prompt, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(ours, prompt(10, 0), **{"max_new_tokens": 5, **kwargs})


def test_empty_prompt_needs_a_start_token(ours):
    with pytest.raises(ValueError, match="empty; GPT-1 has no start-of-text token"):
        generate(ours, torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        generate(ours, torch.tensor([[1, 2]]), attention_mask=torch.tensor([[0, 0]]))


def test_truncate_left_keeps_the_last_tokens(ours, prompt):
    ids = prompt(60, 9)
    got = generate(ours, ids, max_new_tokens=200, truncate_left=True)
    assert torch.equal(got, generate(ours, ids[:, -56:], max_new_tokens=200))


# ---- text level (real GPT-1 vocabulary from ../shared) -----------------------------------------------------------------
def test_generate_text_and_stream_agree(text_model, gpt1_tokenizer):
    tok = gpt1_tokenizer
    kw = dict(max_new_tokens=25, do_sample=True, seed=3, top_p=0.9)
    text = generate_text(text_model, tok, "the quick brown fox", **kw)
    pieces = list(stream_text(text_model, tok, "the quick brown fox", **kw))
    assert isinstance(text, str) and text and len(pieces) > 3
    assert "".join(pieces) == text
    ids = generate(text_model, torch.tensor([tok.encode("the quick brown fox")]), **kw)
    assert text == tok.decode(ids[0, 4:].tolist())
    many = generate_text(text_model, tok, ["a", "the quick brown fox"], num_return_sequences=2, **kw)
    assert len(many) == 4 and all(isinstance(t, str) for t in many)


def test_stop_strings_cut_the_text(text_model, gpt1_tokenizer):
    tok = gpt1_tokenizer
    free = generate_text(text_model, tok, "once upon a time", max_new_tokens=30)
    words = free.split()
    stop = words[3]
    expected = free[: free.find(stop)]
    assert generate_text(text_model, tok, "once upon a time", max_new_tokens=30, stop=[stop, "zzzz"]) == expected
    assert "".join(stream_text(text_model, tok, "once upon a time", max_new_tokens=30, stop=stop)) == expected
    out = generate(
        text_model, torch.tensor([tok.encode("once upon a time")]), max_new_tokens=30, stop=stop, tokenizer=tok
    )
    assert out.shape[1] < 4 + 30  # generation itself stopped, not just the text


def test_empty_text_prompt_with_start_token(text_model, gpt1_tokenizer):
    with pytest.raises(ValueError, match="empty"):
        generate_text(text_model, gpt1_tokenizer, "", max_new_tokens=3)
    assert isinstance(generate_text(text_model, gpt1_tokenizer, "", max_new_tokens=3, start_token_id=0), str)


def test_cli_generate(tmp_path, text_model, gpt1_tokenizer, capsys):
    from gpt1.cli.verbs import main

    text_model.save_pretrained(tmp_path, tokenizer=gpt1_tokenizer)
    args = ["generate", "--model", str(tmp_path), "--prompt", "the quick brown fox", "--max-new-tokens", "12"]
    assert main(args + ["--greedy"]) == 0
    greedy = capsys.readouterr().out.strip()
    assert greedy == generate_text(text_model, gpt1_tokenizer, "the quick brown fox", max_new_tokens=12)
    assert main(args + ["--seed", "5", "--stream"]) == 0
    streamed = capsys.readouterr().out.strip()
    assert main(args + ["--seed", "5"]) == 0
    assert capsys.readouterr().out.strip() == streamed
    assert main(args + ["--num-beams", "3", "--num-samples", "2", "--dtype", "bfloat16"]) == 0
    assert capsys.readouterr().out.count("=== prompt 1, sample") == 2
    assert main(args + ["--top-p", "1.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--top-p 1.5 is outside the accepted range (0, 1]" in err  # the flag, not top_p=
