"""zeroembed's thin client: sentence and token embeddings from a zeroembed server.

Needs only pyzmq and numpy::

    from zeroembed.client import Client

    with Client("tcp://127.0.0.1:5555") as client:
        vectors = client.encode(["hello world", "zeroembed"])  # float32, shape (2, dim)
        best = client.rerank("query", ["doc a", "doc b"], top_n=1, model="rerank")  # with a reranker loaded

``AsyncClient`` is the asyncio twin. Errors are subclasses of ``ZeroEmbedError``.
"""

from .aio import AsyncClient
from .bert_compat import BertClient
from .calls import RerankResult
from .client import Client
from .errors import InvalidRequest, ServerBusy, ServerError, ServerTimeout, ZeroEmbedError
from .protocol import PROTOCOL_VERSION, EncodeOptions, ErrorCode, Output, RerankOptions

__all__ = [
    "PROTOCOL_VERSION",
    "AsyncClient",
    "BertClient",
    "Client",
    "EncodeOptions",
    "ErrorCode",
    "InvalidRequest",
    "Output",
    "RerankOptions",
    "RerankResult",
    "ServerBusy",
    "ServerError",
    "ServerTimeout",
    "ZeroEmbedError",
]
