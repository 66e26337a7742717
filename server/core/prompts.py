"""Which prompt an encode request's texts get, and how many of its tokens the model pools without.

The one implementation of the prompt options (``prompt_name``, ``prompt``, the
model's ``default_prompt_name``) for everything that encodes: the server's
request core and ``zeroembed embed``, so both give the same vectors.
"""

from __future__ import annotations

from zeroembed.client.protocol import EncodeOptions, ErrorCode

from ..artifact import PROMPT_LENGTH, ArtifactManifest, RerankManifest
from .tokenization import TextTokenizer
from .validation import RequestRejected


_MAX_COUNTED = 1024


class Prompts:
    """A model's prompts: resolves a request's prompt and counts its tokens (once per prompt)."""

    def __init__(self, manifest: ArtifactManifest | RerankManifest, tokenizer: TextTokenizer) -> None:
        self.manifest = manifest
        self.tokenizer = tokenizer
        # Models that pool without the prompt are told each row's prompt length: counted once per prompt.
        self._lengths: dict[str, int] | None = {} if PROMPT_LENGTH in manifest.inputs else None

    def resolve(self, options: EncodeOptions) -> str:
        """The prompt to prepend to each text: the request's, by name or literal, else the model's default.

        Raises :class:`RequestRejected` naming the option for a name the model lacks (listing its
        names), for both options at once, or for a prompt with ``is_tokenized`` word lists.
        """
        prompts = self.manifest.prompts
        if options.prompt is not None and options.prompt_name is not None:
            raise RequestRejected(ErrorCode.INVALID_REQUEST, "give 'prompt' or 'prompt_name', not both")
        if options.prompt_name is not None:
            if not prompts:
                raise RequestRejected(ErrorCode.INVALID_REQUEST, "option 'prompt_name': this model has no named "
                                                                 "prompts; send a literal 'prompt' instead")
            if options.prompt_name not in prompts:
                raise RequestRejected(ErrorCode.INVALID_REQUEST, f"option 'prompt_name': {options.prompt_name!r} is "
                                                                 f"not one of this model's prompts {sorted(prompts)}")
            prompt = prompts[options.prompt_name]
        elif options.prompt is not None:
            prompt = options.prompt
        else:
            return prompts.get(self.manifest.default_prompt_name or "", "") if not options.is_tokenized else ""
        if options.is_tokenized and prompt:
            raise RequestRejected(ErrorCode.INVALID_REQUEST, "prompts apply to texts, not to is_tokenized word lists")
        return prompt

    def length(self, prompt: str) -> int:
        """Leading tokens of ``prompt + text`` that are the prompt's, for a model that pools without them;
        0 for a model that pools over the prompt too (it takes no ``prompt_length``)."""
        if self._lengths is None or not prompt:
            return 0
        if prompt not in self._lengths:
            if len(self._lengths) >= _MAX_COUNTED:  # literal prompts come from clients: keep the memo bounded
                self._lengths.clear()
            self._lengths[prompt] = self.tokenizer.prompt_length(prompt)
        return self._lengths[prompt]
