"""zeroembed's server: a ZeroMQ front end, a token-budget batcher and a pool of ONNX Runtime workers.

Layers, front to back: ``cli`` (flags) → ``config`` (settings) → ``broker``
(sockets, requests, dispatch) → ``batcher`` (which texts run together) →
``pool``/``worker`` (processes) → ``runtime`` (the ONNX Runtime session).
"""
