"""fastembed in process, run by the peers' interpreter for ``zeroembed bench --compare --peers``.

    python fastembed_runner.py MODEL_DIR TEXTS_JSON THREADS

Loads the model folder's ``model.onnx`` as a local custom model (mean pooling, normalized: what
all-MiniLM-L6-v2 is; nothing downloads), answers one JSON line ``{"ready": ...}``, then for each JSON
line ``{"batch_size": B, "limit": N|null}`` on stdin encodes the texts (all of them in batches of B,
or the first N one call per text when B is 1) and answers ``{"seconds": ..., "texts": ...}``.
Errors answer ``{"error": "..."}``. Imports nothing from zeroembed: it runs in another environment.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> int:
    model_dir, texts_file, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    texts = json.loads(open(texts_file, encoding="utf-8").read())
    try:
        from fastembed import TextEmbedding
        from fastembed.common.model_description import ModelSource, PoolingType

        name = "local/zeroembed-peer-model"
        TextEmbedding.add_custom_model(model=name, pooling=PoolingType.MEAN, normalization=True,
                                       sources=ModelSource(hf=name), dim=384, model_file="model.onnx")
        model = TextEmbedding(name, specific_model_path=model_dir, threads=threads, lazy_load=False)
        list(model.embed(texts[:16], batch_size=8))  # warm up
    except Exception as exc:  # reported to the compare, which prints it in place of the row
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    import fastembed

    print(json.dumps({"ready": True, "version": getattr(fastembed, "__version__", None)}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        batch, limit = int(request["batch_size"]), request.get("limit")
        chosen = texts if limit is None else texts[:limit]
        t0 = time.perf_counter()
        if batch == 1:
            for text in chosen:
                list(model.embed([text], batch_size=1))
        else:
            list(model.embed(chosen, batch_size=batch))
        print(json.dumps({"seconds": time.perf_counter() - t0, "texts": len(chosen)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
