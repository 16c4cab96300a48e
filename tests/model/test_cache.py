"""The KV cache: padding remembered across steps, splicing rows of several caches, and the decode weight layout."""

from __future__ import annotations

import torch

from gpt1 import GPT, GPT1Config, KVCache

TINY = dict(n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=97)


def test_bfloat16_cache_is_float32_on_a_cpu():
    cfg = GPT1Config(**TINY)
    assert KVCache(cfg, 1, 8, "cpu", torch.bfloat16).keys[0].dtype == torch.float32
    assert KVCache(cfg, 1, 8, "cpu", torch.float64).dtype == torch.float64


def test_splice_right_aligns_rows_of_several_caches():
    """Row i of the spliced cache holds the last n stored positions of its source row; decoding on it gives the
    logits each row gets alone."""
    torch.manual_seed(0)
    model = GPT(GPT1Config(**TINY)).eval()
    cfg = model.config
    a_ids, b_ids = torch.randint(0, 97, (2, 7)), torch.randint(0, 97, (1, 4))
    with torch.no_grad():
        a, b = KVCache(cfg, 2, 7, "cpu", model.dtype), KVCache(cfg, 1, 4, "cpu", model.dtype)
        model(a_ids, cache=a)
        model(b_ids, cache=b)
        spliced = KVCache.splice(cfg, [(b, 0, 4), (a, 1, 7)], capacity=8, device="cpu", dtype=model.dtype)
        assert spliced.length == 7 and spliced.key_mask[0].tolist() == [False] * 3 + [True] * 4 + [False]
        assert torch.equal(spliced.keys[1][0, :, 3:7], b.keys[1][0])
        nxt = torch.tensor([[5], [6]])
        mask = torch.cat([spliced.key_mask[:, :7], torch.ones(2, 1, dtype=torch.bool)], 1)
        positions = torch.tensor([[4], [7]])
        got = model(nxt, attention_mask=mask, position_ids=positions, cache=spliced).logits[:, -1]
        alone_b = model(torch.cat([b_ids, nxt[:1]], 1)).logits[0, -1]
        alone_a = model(torch.cat([a_ids[1:], nxt[1:]], 1)).logits[0, -1]
    assert torch.allclose(got[0], alone_b, atol=1e-5) and torch.allclose(got[1], alone_a, atol=1e-5)


def test_decode_layout_is_the_models_own_business():
    """The first step with a cache stores the matrices (in, out) on a CPU in fp32, with no call from the caller;
    a resize, a dtype change and train() are all noticed."""
    torch.manual_seed(0)
    model = GPT(GPT1Config(**TINY)).eval()
    w = model.h[0].attn.c_attn.weight
    ids = torch.randint(0, 97, (1, 5))
    with torch.no_grad():
        model(ids)
        assert w.is_contiguous()  # no cache: nothing changes
        model(ids, cache=KVCache(model.config, 1, 8, "cpu", model.dtype))
    assert w.stride() == (1, w.shape[0]) and model.lm_head.weight is model.tokens_embed.weight
    model.resize_token_embeddings(100)
    with torch.inference_mode():
        model(ids, cache=KVCache(model.config, 1, 8, "cpu", model.dtype))
    assert not model.lm_head.weight.is_contiguous() and model.lm_head.weight is model.tokens_embed.weight
    model.to(torch.bfloat16)
    with torch.no_grad():
        model(ids, cache=KVCache(model.config, 1, 8, "cpu", model.dtype))
    assert model.h[0].attn.c_attn.weight.is_contiguous()  # bf16 decodes fastest in the usual order
    model.float()
    with torch.no_grad():
        model(ids, cache=KVCache(model.config, 1, 8, "cpu", model.dtype))
    assert not model.h[0].attn.c_attn.weight.is_contiguous()  # back to fp32: the decode layout again
    model.train()
    assert all(p.is_contiguous() for p in model.parameters())
    model(ids, labels=ids).loss.backward()  # trainable: no inference tensors left behind
