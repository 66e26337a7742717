"""A request's one validation pass: its options (pydantic, derived from the protocol's declaration) and
the per-request limits. Anything refused here is answered at once and never queued."""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any, Literal

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError, create_model

from zeroembed.client.protocol import ENCODE_OPTION_TYPES, RERANK_OPTION_TYPES, EncodeOptions, ErrorCode, Request, \
    RerankOptions, option_bounds


class RequestRejected(Exception):
    """A request the server answers with an error instead of running it."""

    def __init__(self, code: ErrorCode, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.index = index


_STRICT: dict[type, Any] = {bool: StrictBool, int: StrictInt, str: StrictStr}


def _field_type(name: str, kind: type, nullable: bool, cls: type) -> Any:
    strict = Literal[tuple(m.value for m in kind)] if issubclass(kind, Enum) else _STRICT[kind]
    bounds = option_bounds(name, cls)
    if bounds:
        strict = Annotated[strict, Field(**bounds)]
    return strict | None if nullable else strict


def _options_model(cls: type, types: dict[str, tuple[type, bool]]) -> type[BaseModel]:
    """A pydantic model of an options dataclass: same names, types and defaults, validated strictly."""
    fields = {f.name: (_field_type(f.name, *types[f.name], cls), f.default) for f in dataclasses.fields(cls)}
    # Unknown header fields are ignored: the protocol lets newer clients add options.
    return create_model(f"{cls.__name__}Model", __config__=ConfigDict(extra="ignore"), **fields)


EncodeOptionsModel = _options_model(EncodeOptions, ENCODE_OPTION_TYPES)
RerankOptionsModel = _options_model(RerankOptions, RERANK_OPTION_TYPES)


def _parse(model_cls: type[BaseModel], cls: type, request: Request) -> Any:
    try:
        model = model_cls.model_validate(request.header)
    except ValidationError as exc:
        first = exc.errors()[0]
        field_name = ".".join(str(p) for p in first["loc"])
        raise RequestRejected(ErrorCode.INVALID_REQUEST, f"option {field_name!r}: {first['msg']}") from None
    return cls.checked(model.model_dump())


def parse_options(request: Request) -> EncodeOptions:
    """Validate an encode request's options; :class:`RequestRejected` names the bad field."""
    return _parse(EncodeOptionsModel, EncodeOptions, request)


def parse_rerank_options(request: Request) -> RerankOptions:
    """Validate a rerank request's options; :class:`RequestRejected` names the bad field."""
    return _parse(RerankOptionsModel, RerankOptions, request)


def check_limits(texts: list[str] | list[list[str]], *, max_texts: int, max_chars: int, what: str = "texts") -> int:
    """Refuse a request over the per-request limits, naming the limit and the text; return its characters."""
    if len(texts) > max_texts:
        raise RequestRejected(
            ErrorCode.LIMIT_EXCEEDED, f"{len(texts)} {what} in one request; the limit is {max_texts} (split it)"
        )
    total = 0
    for index, text in enumerate(texts):
        chars = len(text) if isinstance(text, str) else sum(map(len, text))
        if chars > max_chars:
            raise RequestRejected(
                ErrorCode.LIMIT_EXCEEDED, f"{what}[{index}] has {chars} characters; the limit is {max_chars}", index
            )
        total += chars
    return total
