"""Request bodies as the voice stacks send them, replayed by the tests and the parser's timing.

Each body says where it comes from. Phone numbers, ids and secrets are made up.
"""

from __future__ import annotations

from typing import Any

SYSTEM = (
    "You are Sam, the receptionist of Bright Smile Dental. Answer in one or two short "
    "sentences, spoken style, no lists. Offer appointments Monday to Friday, 8 am to 5 pm. "
) * 8

BOOK_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "book_appointment",
        "description": "Book a cleaning or a check-up.",
        "parameters": {
            "type": "object",
            "properties": {
                "day": {"type": "string", "description": "The day, e.g. Tuesday"},
                "time": {"type": "string", "description": "The time, e.g. 9 am"},
            },
            "required": ["day"],
        },
    },
}

# A turn of a VAPI phone call with the default metadataSendMode ("variable"): OpenAI's
# fields plus call, customer, phoneNumber, metadata, timestamp (FACTS.md §1 and §9, from
# VAPI's OpenAPI schema and logged requests). The common path the parser must keep fast.
VAPI_TURN: dict[str, Any] = {
    "model": "llama3.1:8b",
    "messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "assistant", "content": "Hello, thanks for calling Bright Smile. How can I help?"},
        {
            "role": "user",
            "content": "Hi, I'd like to book a cleaning.",
            "metadata": {"confidence": 0.93},
        },
        {"role": "assistant", "content": "Of course. Which day suits you best?"},
        {
            "role": "user",
            "content": "Tuesday morning, if you have anything.",
            "metadata": {"confidence": 0.88},
        },
    ],
    "temperature": 0.5,
    "max_tokens": 250,
    "stream": True,
    "tools": [BOOK_TOOL],
    "call": {
        "id": "5f1c6a52-33a8-4b8e-9a51-0c2b1e2d7f10",
        "orgId": "0e4d6f0a-8a9b-4c44-9e1f-2a7b5c3d9e11",
        "createdAt": "2026-08-20T14:03:11.512Z",
        "updatedAt": "2026-08-20T14:03:41.020Z",
        "type": "inboundPhoneCall",
        "status": "in-progress",
        "phoneCallProvider": "twilio",
        "phoneCallTransport": "pstn",
        "assistantId": "a1b2c3d4-0000-4000-8000-00000000beef",
        "monitor": {
            "listenUrl": "wss://phone-call-websocket.aws-us-west-2-backend-production1.vapi.ai/x/listen",
            "controlUrl": "https://phone-call-websocket.aws-us-west-2-backend-production1.vapi.ai/x/control",
        },
    },
    "customer": {"number": "+15550100001"},
    "phoneNumber": {
        "id": "9c0e5b1a-1111-4222-8333-444455556666",
        "number": "+15550100002",
        "provider": "twilio",
        "twilioAccountSid": "AC00000000000000000000000000000000",
        "twilioAuthToken": "not-a-real-token",
    },
    "metadata": {},
    "timestamp": 1787234621020,
}

# LiveKit Agents, livekit-agents 1.7.0 with livekit-plugins-openai 1.7.0 (tag
# livekit-agents@1.7.0): the arguments of LLMStream._run's
# `client.chat.completions.create(messages=..., tools=..., model=...,
# stream_options={"include_usage": True}, stream=True, **extra_kwargs)` in
# livekit-agents/livekit/agents/inference/llm.py, where extra_kwargs are what
# livekit-plugins-openai's LLM.chat() sets from LLM(...)'s options
# (livekit/plugins/openai/llm.py). Messages as llm/_provider_format/openai.py renders
# the chat context (a tool call is an assistant message without content, its output a
# tool message); the tool as llm/utils.py build_strict_openai_schema makes it.
LIVEKIT_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "lookup_weather",
        "strict": True,
        "description": "Look up the weather for a location.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city"},
                "unit": {"type": ["string", "null"], "enum": ["celsius", "fahrenheit", None]},
            },
            "required": ["location", "unit"],
            "additionalProperties": False,
        },
    },
}
LIVEKIT_CREATE: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "You are a helpful voice assistant. Keep answers short."},
        {"role": "user", "content": "What's the weather in Paris?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_lk0001",
                    "type": "function",
                    "function": {
                        "name": "lookup_weather",
                        "arguments": '{"location": "Paris", "unit": null}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_lk0001", "content": "sunny, 21 degrees"},
    ],
    "tools": [LIVEKIT_TOOL],
    "model": "llama3.1:8b",
    "stream_options": {"include_usage": True},
    "stream": True,
    # LLM(user=..., temperature=..., parallel_tool_calls=..., tool_choice=...,
    # prompt_cache_key=..., service_tier=..., reasoning_effort=..., top_p=...,
    # max_completion_tokens=..., metadata=...) as LLM.chat() passes them on.
    "user": "participant-7f3a",
    "temperature": 0.8,
    "parallel_tool_calls": False,
    "tool_choice": "auto",
    "prompt_cache_key": "room-42",
    "service_tier": "priority",
    "reasoning_effort": "minimal",
    "top_p": 0.9,
    "max_completion_tokens": 300,
    "metadata": {"room": "room-42"},
}

# Pipecat 1.7.0 (pipecat-ai/pipecat tag v1.7.0): what BaseOpenAILLMService.
# build_chat_completion_params returns in src/pipecat/services/openai/base_llm.py,
# passed as `self._client.chat.completions.create(**params)`: model, stream,
# stream_options, the settings left unset omitted (NOT_GIVEN), service_tier when set,
# then messages, tools and tool_choice from OpenAILLMAdapter.get_llm_invocation_params
# (src/pipecat/adapters/services/open_ai_adapter.py; tools from FunctionSchema.
# to_default_dict). A function call in the context is an assistant message with
# tool_calls and a tool message with its result (processors/aggregators/
# llm_response_universal.py).
PIPECAT_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state"},
                "format": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location", "format"],
        },
    },
}
PIPECAT_CREATE: dict[str, Any] = {
    "model": "llama3.1:8b",
    "stream": True,
    "stream_options": {"include_usage": True},
    "temperature": 0.7,
    "max_completion_tokens": 200,
    "service_tier": "default",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant in a voice conversation."},
        {"role": "user", "content": "What's the weather in San Francisco?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_pc0001",
                    "function": {
                        "name": "get_current_weather",
                        "arguments": '{"location": "San Francisco, CA", "format": "celsius"}',
                    },
                    "type": "function",
                }
            ],
        },
        {
            "role": "tool",
            "content": '{"conditions": "foggy", "temperature": "16"}',
            "tool_call_id": "call_pc0001",
        },
    ],
    "tools": [PIPECAT_TOOL],
    "tool_choice": "auto",
}

# ElevenLabs Agents' custom LLM, from ElevenLabs' "Integrate your own model" page
# (elevenlabs/elevenlabs-docs, fern/conversational-ai/pages/customization/custom-llm/
# overview.mdx at 3557f0b): the "Example Request with System Tools" (its system tools
# in OpenAI's function format) and, with "Custom LLM extra body" on, the example
# request's elevenlabs_extra_body and the user_id its sample server reads.
ELEVENLABS_SYSTEM_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "end_call",
            "description": "Call this function to end the current conversation when the main "
            "task has been completed...",
            "parameters": {
                "type": "object",
                "properties": {
                    "reason": {"type": "string", "description": "The reason for the tool call."},
                    "message": {
                        "type": "string",
                        "description": "A farewell message to send to the user along right "
                        "before ending the call.",
                    },
                },
                "required": ["reason"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "skip_turn",
            "description": "Skip a turn when the user explicitly indicates they need a moment "
            "to think...",
            "parameters": {
                "type": "object",
                "properties": {
                    "reason": {
                        "type": "string",
                        "description": "Optional free-form reason explaining why the pause is "
                        "needed.",
                    }
                },
                "required": [],
            },
        },
    },
]
ELEVENLABS_TURN: dict[str, Any] = {
    "messages": [
        {
            "role": "system",
            "content": "You are a helpful assistant. You have access to system tools for "
            "managing conversations.",
        },
        {"role": "assistant", "content": "Hey I'm currently unavailable."},
        {"role": "user", "content": "I think we're done here, thanks for your help!"},
    ],
    "model": "your-custom-model",
    "temperature": 0.5,
    "max_tokens": 5000,
    "stream": True,
    "tools": ELEVENLABS_SYSTEM_TOOLS,
    "user_id": "end-user-1234",
    "elevenlabs_extra_body": {
        "UUID": "123e4567-e89b-12d3-a456-426614174000",
        "parameter-1": "value-1",
        "parameter-2": "value-2",
    },
}
