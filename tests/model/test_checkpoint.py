"""Checkpoint formats: HF dirs (safetensors / bin / DoubleHeads), OpenAI's npy release, and clear errors for bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gpt1 import GPT, GPT1Config
from gpt1.checkpoint import CheckpointError, hf_to_ours, load_into, ours_to_hf

transformers = pytest.importorskip("transformers", reason="transformers 4.x is the reference implementation")

SMALL = dict(n_layer=2, n_embd=64, n_head=4, n_positions=32, vocab_size=300)


def hf_config(**kw):
    return transformers.OpenAIGPTConfig(**{**SMALL, **kw})


@pytest.fixture()
def ids():
    return torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))


def test_bin_checkpoint_loads_with_weights_only(tmp_path, ids):
    torch.manual_seed(0)
    hf = transformers.OpenAIGPTLMHeadModel(hf_config()).eval()
    hf.save_pretrained(tmp_path, safe_serialization=False)
    assert (tmp_path / "pytorch_model.bin").exists() and not (tmp_path / "model.safetensors").exists()
    ours = GPT.from_pretrained(tmp_path)
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids).logits).abs().max() <= 1e-5


def test_base_model_dir_loads(tmp_path, ids):
    torch.manual_seed(0)
    base = transformers.OpenAIGPTModel(hf_config()).eval()
    base.save_pretrained(tmp_path)
    ours = GPT.from_pretrained(tmp_path)
    with torch.no_grad():
        assert (base(ids).last_hidden_state - ours(ids).hidden_states).abs().max() <= 1e-5


def test_double_heads_keeps_multiple_choice_head(tmp_path):
    torch.manual_seed(0)
    hf = transformers.OpenAIGPTDoubleHeadsModel(hf_config()).eval()
    hf.save_pretrained(tmp_path)
    ours = GPT.from_pretrained(tmp_path)
    assert ours.task_head is not None and ours.config.num_labels == 1
    assert torch.equal(ours.task_head.weight, hf.multiple_choice_head.summary.weight)
    assert torch.equal(ours.task_head.bias, hf.multiple_choice_head.summary.bias)


def test_dtype_and_run_dir_round_trip(tmp_path, ids):
    model = GPT(GPT1Config(**SMALL))
    model.save_pretrained(tmp_path)
    bf16 = GPT.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16 and not bf16.training
    with torch.no_grad():
        assert (bf16(ids).logits.float() - model.eval()(ids).logits).abs().max() < 0.1
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "openai-gpt"


def write_original_release(path, arrays, n_files=10):
    """OpenAI's layout: one flat float32 array, split into params_0..params_{n-1}.npy, with their shapes listed."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "params_shapes.json").write_text(json.dumps([list(a.shape) for a in arrays]))
    flat = np.concatenate([a.reshape(-1) for a in arrays])
    for i, piece in enumerate(np.array_split(flat, n_files)):
        np.save(path / f"params_{i}.npy", piece)


def test_original_npy_release_matches_hf_names(tmp_path, ids):
    rng = np.random.default_rng(0)
    e, n_pos, vocab, layers = 64, 32, 300, 2
    layer_shapes = [
        (1, e, 3 * e),
        (3 * e,),
        (1, e, e),
        (e,),
        (e,),
        (e,),
        (1, e, 4 * e),
        (4 * e,),
        (1, 4 * e, e),
        (e,),
        (e,),
        (e,),
    ]
    arrays = [rng.normal(0, 0.02, (n_pos, e)), rng.normal(0, 0.02, (vocab, e))]
    arrays += [rng.normal(0, 0.1, s) for _ in range(layers) for s in layer_shapes]
    arrays = [a.astype(np.float32) for a in arrays]
    write_original_release(tmp_path / "release", arrays)
    ours = GPT.from_pretrained(tmp_path / "release")
    assert (ours.config.n_layer, ours.config.n_embd, ours.config.vocab_size, ours.config.n_positions) == (
        2,
        64,
        300,
        32,
    )

    # The same arrays placed into HF's model under HF's names (what HF's own TF-era converter does).
    hf = transformers.OpenAIGPTLMHeadModel(hf_config(n_head=ours.config.n_head)).eval()
    names = [
        "attn.c_attn.weight",
        "attn.c_attn.bias",
        "attn.c_proj.weight",
        "attn.c_proj.bias",
        "ln_1.weight",
        "ln_1.bias",
        "mlp.c_fc.weight",
        "mlp.c_fc.bias",
        "mlp.c_proj.weight",
        "mlp.c_proj.bias",
        "ln_2.weight",
        "ln_2.bias",
    ]
    state = {"transformer.positions_embed.weight": arrays[0], "transformer.tokens_embed.weight": arrays[1]}
    for j, a in enumerate(arrays[2:]):
        state[f"transformer.h.{j // 12}.{names[j % 12]}"] = a.reshape(a.shape[1:]) if a.ndim == 3 else a
    hf.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    hf.tie_weights()
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids).logits).abs().max() <= 1e-5

    # `gpt1 convert` writes an HF dir that HF itself loads with identical logits.
    from gpt1.cli.verbs import main

    assert main(["convert", str(tmp_path / "release"), str(tmp_path / "hf")]) == 0
    hf2 = transformers.OpenAIGPTLMHeadModel.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        assert (hf2(ids).logits - ours(ids).logits).abs().max() <= 1e-5


def test_original_release_with_wrong_sizes_is_refused(tmp_path):
    write_original_release(tmp_path, [np.zeros((4, 8), np.float32), np.zeros((10, 8), np.float32)], n_files=2)
    (tmp_path / "params_shapes.json").write_text(json.dumps([[4, 8], [11, 8]]))
    with pytest.raises(CheckpointError, match="needs"):
        GPT.from_pretrained(tmp_path)


@pytest.fixture()
def saved(tmp_path):
    GPT(GPT1Config(**SMALL)).save_pretrained(tmp_path)
    return tmp_path


def test_truncated_safetensors(saved):
    f = saved / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt or truncated"):
        GPT.from_pretrained(saved)


def test_missing_weights_and_config(saved):
    (saved / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors or pytorch_model.bin"):
        GPT.from_pretrained(saved)
    (saved / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json: missing"):
        GPT.from_pretrained(saved)


def test_config_not_matching_weights(saved):
    cfg = json.loads((saved / "config.json").read_text())
    cfg["n_embd"] = 128
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="has shape .* but config.json implies"):
        GPT.from_pretrained(saved)


def test_unknown_and_missing_tensors_are_named(tmp_path):
    model = GPT(GPT1Config(**SMALL))
    state = hf_to_ours(ours_to_hf(model.state_dict()))
    with pytest.raises(CheckpointError, match="unknown tensors bogus.weight"):
        load_into(model, {**state, "bogus.weight": torch.zeros(1)}, source=tmp_path)
    del state["h.1.ln_2.bias"]
    with pytest.raises(CheckpointError, match=r"missing 1 tensors \(e.g. h.1.ln_2.bias\)"):
        load_into(model, state, source=tmp_path)


def test_pickled_bin_is_not_executed(tmp_path):
    """A .bin holding arbitrary pickled objects is refused by weights_only loading, never unpickled."""
    (tmp_path / "config.json").write_text(json.dumps(GPT1Config(**SMALL).to_hf_dict()))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights-only"):
        GPT.from_pretrained(tmp_path)


def test_not_a_dir_and_not_a_hub_id(tmp_path):
    with pytest.raises(CheckpointError, match="not a hub id"):
        GPT.from_pretrained(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CheckpointError, match="expected a model directory"):
        GPT.from_pretrained(tmp_path / "file.txt")
