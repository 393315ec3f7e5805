"""The streaming core: a :class:`~server.core.events.Turn` in, typed events out of a warm Ollama.

It owns everything about Ollama (connections, warmth, fixed load-time options,
admission, timeouts, the mapping of NDJSON chunks to events) and imports no web
framework and no RunPod SDK.
"""
