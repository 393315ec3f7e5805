"""OpenAI's chat-completions shapes: the request, validated into a turn, and the response chunks."""
