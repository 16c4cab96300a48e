"""Reading and writing GPT-1 weights: HF model dirs (safetensors / bin), OpenAI's original npy release, hub ids.

This module maps (GPT1Config, tensors) to and from files; it never builds a model (`gpt1.loading` does). Tensors
use our names and `nn.Linear` (out, in) layout; HF and the original use `Conv1D` (in, out), so those matrices are
transposed on the way in and out. Nothing here unpickles: safetensors, numpy without pickle, and
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gpt1.config import GPT1Config
from gpt1.hub import HubUnavailable, fetch

HUB_ALLOW = ["config.json", "model.safetensors", "pytorch_model.bin", "vocab.json", "merges.txt", "*.json"]
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Task-head names of HF's heads-on-top models, mapped to our single `task_head`.
_HEAD_ALIASES = {
    "multiple_choice_head.summary.weight": "task_head.weight",
    "multiple_choice_head.summary.bias": "task_head.bias",
}
# Layer names of the original release, in the order its flat parameter list stores them.
_ORIGINAL_LAYER_PARAMS = (
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
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: the message names the file and the problem."""


# ---- locating --------------------------------------------------------------------------------------
def resolve(name_or_path: str | os.PathLike) -> Path:
    """A local dir for `name_or_path`: the path itself, or a hub id downloaded (or found in the HF cache)."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path}: expected a model directory, got a file.")
        return path
    name = str(name_or_path)
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise CheckpointError(f"{name}: no such directory, and not a hub id of the form 'owner/name'.")
    from huggingface_hub import snapshot_download

    try:
        return fetch(name, lambda local: snapshot_download(name, allow_patterns=HUB_ALLOW, local_files_only=local))
    except HubUnavailable as e:
        # 'runs/nope' looks like a hub id too: say first that no such directory exists.
        raise HubUnavailable(
            name, e.detail, f"no such directory {name}, and no hub repo of that name to use: {e.detail}."
        ) from None


def is_original_release(path: Path) -> bool:
    return (path / "params_shapes.json").exists()


# ---- loading ---------------------------------------------------------------------------------------
def read(name_or_path: str | os.PathLike) -> tuple[GPT1Config, dict[str, torch.Tensor], Path]:
    """(config, tensors in our names, the local dir) of an HF dir, a gpt1 run dir, OpenAI's npy release, or a hub id."""
    path = resolve(name_or_path)
    if is_original_release(path):
        config, state = read_original_release(path)
    else:
        config = GPT1Config.load(_require(path / "config.json"))
        state = hf_to_ours(read_state_dict(path))
        if "task_head.weight" in state and not config.num_labels:
            config.num_labels = state["task_head.weight"].shape[0]
    return config, state, path


def _require(file: Path) -> Path:
    if not file.exists():
        raise CheckpointError(
            f"{file}: missing (a model dir needs config.json and model.safetensors or pytorch_model.bin)."
        )
    return file


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of an HF-style dir, preferring safetensors; `.bin` only with `weights_only=True`."""
    st, pt = path / "model.safetensors", path / "pytorch_model.bin"
    if st.exists():
        try:
            return load_file(str(st))
        except (SafetensorError, OSError, RuntimeError) as e:
            raise CheckpointError(f"{st}: corrupt or truncated safetensors file ({e}).") from e
    if pt.exists():
        try:
            state = torch.load(pt, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{pt}: cannot be read as a weights-only PyTorch checkpoint ({e}).") from e
        if not isinstance(state, dict):
            raise CheckpointError(f"{pt}: expected a dict of tensors, got {type(state).__name__}.")
        return state
    raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin found.")


def hf_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename HF keys to ours and transpose Conv1D matrices; drop buffers and the tied LM head."""
    out = {}
    for key, tensor in state.items():
        key = key.removeprefix("transformer.")
        if key in ("lm_head.weight", "position_ids") or key.endswith(".attn.bias") and tensor.dim() == 4:
            continue  # tied to tokens_embed / non-persistent buffers some old checkpoints saved
        key = _HEAD_ALIASES.get(key, key)
        if key.endswith(_CONV1D):
            tensor = tensor.t()
        out[key] = tensor.contiguous()
    return out


def ours_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `hf_to_ours`: HF's names and Conv1D layout, LM head left to HF's weight tying."""
    out = {}
    for key, tensor in state.items():
        if key == "lm_head.weight":
            continue
        if key.endswith(_CONV1D):
            tensor = tensor.t()
        out[key if key.startswith("task_head.") else f"transformer.{key}"] = tensor.detach().contiguous().cpu()
    return out


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Copy `state` (our names) into a GPT `model`, with one clear error for missing, unknown or mis-shaped tensors;
    the tied LM head is set from the token embedding."""
    expected = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    missing = sorted(set(expected) - set(state))
    unknown = sorted(set(state) - set(expected))
    have, want = _layer_count(state), _layer_count(expected)
    if have != want:  # say what differs rather than list the tensors of the extra (or missing) layers
        raise CheckpointError(
            f"{source}: holds a {have}-layer model, but the model it is loaded into has {want} "
            f"layers (a resume needs the architecture the run was started with)."
        )
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
        if unknown:
            parts.append(f"unknown tensors {', '.join(unknown[:3])}{' ...' if len(unknown) > 3 else ''}")
        raise CheckpointError(f"{source}: does not match a GPT-1 model: {'; '.join(parts)}.")
    bad = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items() if state[k].shape != v.shape]
    if bad:
        k, got, want = bad[0]
        raise CheckpointError(
            f"{source}: tensor {k} has shape {got} but config.json implies {want}"
            f"{f' ({len(bad) - 1} more mismatches)' if len(bad) > 1 else ''}."
        )
    tied = {"lm_head.weight": state["tokens_embed.weight"]} if "lm_head.weight" in model.state_dict() else {}
    model.load_state_dict({**state, **tied}, strict=True)  # an int8 model's head owns no tensor: nothing to tie


def _layer_count(state: dict) -> int:
    """Number of transformer blocks in a state dict (keys `h.<i>.`)."""
    return len({k.split(".")[1] for k in state if k.startswith("h.") and k.split(".")[1].isdigit()})


def read_original_release(path: Path) -> tuple[GPT1Config, dict[str, torch.Tensor]]:
    """OpenAI's `params_shapes.json` + `params_0.npy` ...: one flat array split by the listed shapes."""
    try:
        shapes = json.loads((path / "params_shapes.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path / 'params_shapes.json'}: unreadable ({e}).") from e
    pieces, i = [], 0
    while (path / f"params_{i}.npy").exists():
        try:
            pieces.append(np.load(path / f"params_{i}.npy", allow_pickle=False).reshape(-1))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{path / f'params_{i}.npy'}: corrupt numpy file ({e}).") from e
        i += 1
    if not pieces:
        raise CheckpointError(f"{path}: params_shapes.json found but no params_0.npy.")
    flat = np.concatenate(pieces)
    sizes = [int(np.prod(s)) for s in shapes]
    if sum(sizes) != flat.size:
        raise CheckpointError(
            f"{path}: the params_*.npy files hold {flat.size} numbers; params_shapes.json needs {sum(sizes)}."
        )
    if len(shapes) < 2 or (len(shapes) - 2) % len(_ORIGINAL_LAYER_PARAMS):
        raise CheckpointError(f"{path / 'params_shapes.json'}: {len(shapes)} entries is not 2 + 12 per layer.")
    arrays = [a.reshape(s) for a, s in zip(np.split(flat, np.cumsum(sizes)[:-1]), shapes)]
    n_positions, n_embd = shapes[0]
    config = GPT1Config(
        vocab_size=shapes[1][0],
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=(len(shapes) - 2) // len(_ORIGINAL_LAYER_PARAMS),
        n_head=max(1, n_embd // 64),
    )
    state = {"positions_embed.weight": arrays[0], "tokens_embed.weight": arrays[1]}
    for j, array in enumerate(arrays[2:]):
        layer, name = divmod(j, len(_ORIGINAL_LAYER_PARAMS))
        state[f"h.{layer}.{_ORIGINAL_LAYER_PARAMS[name]}"] = array.squeeze(0) if array.ndim == 3 else array
    # The release's conv weights are (in, out), like HF's Conv1D: reuse that mapping.
    return config, hf_to_ours(
        {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()}
    )


# ---- saving ----------------------------------------------------------------------------------------
def write(out_dir: str | os.PathLike, config: GPT1Config, state: dict[str, torch.Tensor], tokenizer=None) -> Path:
    """Write `config.json` + `model.safetensors` (+ the tokenizer's files) in HF's layout, atomically per file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "model.safetensors.tmp"
    save_file(ours_to_hf(state), str(tmp), metadata={"format": "pt"})
    os.chmod(tmp, 0o666 & ~_umask())  # safetensors creates its file 0600; every other file follows the umask
    os.replace(tmp, out / "model.safetensors")
    (out / "config.json.tmp").write_text(json.dumps(config.to_hf_dict(), indent=2) + "\n")
    os.replace(out / "config.json.tmp", out / "config.json")
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def _umask() -> int:
    """The process umask (reading it means setting it; put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
