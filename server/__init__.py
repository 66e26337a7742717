"""zeroembed's server: a ZeroMQ front end, a token-budget batcher and a pool of ONNX Runtime workers.

Layers, front to back: ``cli`` (flags) → ``config`` (settings) → ``broker``
(client sockets, requests, replies) → ``batcher`` (which texts run together) →
``dispatch`` (batches to workers) → ``pool``/``worker`` (processes) → ``runtime`` (the ONNX Runtime session).
"""
