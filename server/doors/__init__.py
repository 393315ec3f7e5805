"""The doors into the core, each a thin adapter for its transport.

``http`` (the ASGI app: SSE and JSON), ``ws`` (``/ws``), ``vapi`` (VAPI's webhooks),
``serverless`` (RunPod jobs), and the helpers they share (``asgi``, ``auth``,
``protocol``).
"""
