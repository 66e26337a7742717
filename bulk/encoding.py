"""What a job asks of every row's vector: the prompt before each text, and Matryoshka dimensions.

Resolved and applied by the server's own code, so a job's vectors are the
server's for the same options: the options are checked as the protocol
declares them (``EncodeOptions``), the prompt is chosen by the request core's
:class:`~zeroembed.server.core.prompts.Prompts` (a named prompt, a literal one,
or the model's default), and which output serves the job, which dimensions it
keeps and whether they are re-normalized are decided by ``EncodeJob.create``
and applied by ``cut_dimensions``, as for a request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import BulkError

_OPTION = re.compile(r"option '(\w+)'")
_PHRASES = {"a literal 'prompt'": "a literal --prompt", "'prompt' or 'prompt_name'": "--prompt or --prompt-name"}


def _as_flags(message: str) -> str:
    """The server's message about an option, naming the command's flag instead (``--prompt-name``)."""
    message = _OPTION.sub(lambda m: "--" + m.group(1).replace("_", "-"), message)
    for phrase, flags in _PHRASES.items():
        message = message.replace(phrase, flags)
    return message


@dataclass(frozen=True)
class Encoding:
    """The resolved options: ``prompt`` ("" for none) and its tokens the model pools without, the
    dimensions kept (None: all) and whether the cut vectors are made unit length again."""

    prompt: str = ""
    prompt_name: str | None = None  # as asked for (None: a literal prompt, or the model's default)
    prompt_length: int = 0
    dimensions: int | None = None
    normalized: bool = False  # the model's vectors are unit length: so are the cut ones
    dim: int = 0  # each output vector's width

    @classmethod
    def resolve(cls, artifact, *, prompt_name: str | None = None, prompt: str | None = None,
                dimensions: int | None = None) -> Encoding:
        """The options against ``artifact``'s model; :class:`BulkError` names the flag that does not fit."""
        from zeroembed.client.protocol import EncodeOptions
        from zeroembed.server.core.jobs import EncodeJob
        from zeroembed.server.core.prompts import Prompts
        from zeroembed.server.core.tokenization import TextTokenizer
        from zeroembed.server.core.validation import RequestRejected

        manifest = artifact.manifest
        if manifest.task != "embed":
            raise BulkError(f"{artifact.path} is a reranker (a cross-encoder): it scores pairs and has no "
                            "embeddings to write; give an embedding model")
        given = {"prompt_name": prompt_name, "prompt": prompt, "dimensions": dimensions}
        try:
            options = EncodeOptions.checked({k: v for k, v in given.items() if v is not None})
            prompts = Prompts(manifest, TextTokenizer(artifact.tokenizer_path, manifest.max_seq_length))
            text = prompts.resolve(options)
            # The decision a request with these options gets: output, dimensions kept, normalisation after.
            job = EncodeJob.create(lambda _: None, "embed", 0, options, manifest, 0.0)
        except (ValueError, RequestRejected) as exc:
            raise BulkError(_as_flags(getattr(exc, "message", None) or str(exc))) from None
        return cls(prompt=text, prompt_name=prompt_name, prompt_length=prompts.length(text),
                   dimensions=job.dimensions, normalized=job.normalized or job.renormalize,
                   dim=job.dimensions or manifest.hidden_size)

    def texts(self, texts: list[str]) -> list[str]:
        """The texts as the model reads them: each after the prompt."""
        return [self.prompt + text for text in texts] if self.prompt else texts

    def cut(self, vectors: np.ndarray) -> np.ndarray:
        """The model's sentence vectors (rows) as the job writes them: the kept dimensions."""
        from zeroembed.server.core.jobs import cut_dimensions

        return cut_dimensions(vectors, self.dimensions, self.normalized)

    def identity(self) -> dict[str, Any]:
        """What the manifest records, and a resumed job must match: these decide the vectors."""
        return {"dim": self.dim, "dimensions": self.dimensions, "prompt": self.prompt}
