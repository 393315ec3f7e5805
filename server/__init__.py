"""A fast OpenAI-compatible streaming server for voice agents, in front of a warm Ollama.

``core`` (Ollama in, events out), ``chat`` (OpenAI's shapes), ``doors`` (HTTP,
websockets, webhooks, RunPod), ``ops`` (metrics and logs); ``config`` and ``tools``
are shared by all of them.
"""
