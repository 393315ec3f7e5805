"""Model profiles: how each simulated model is rendered, parsed and described.

Ollama 0.32 decides per model how a chat runs (``server/routes.go``,
``chatModeForModel``): a model with a renderer, a parser, harmony or a Go
``TEMPLATE`` runs *rendered* (Ollama renders the prompt, llama-server's
``/completion`` generates, Ollama parses tools and thinking); any other model
runs *native* (llama-server's own chat endpoint renders and parses, and tool
calls come only on the ``done`` line). The registry decides which applies
through the model's config and template, so the simulator decides by name:

* ``qwen3...`` is **qwen3**: rendered, parser ``qwen3`` (``model/parsers/qwen3.go``):
  thinking capability, ``<tool_call>`` tags;
* ``gpt-oss...`` is **gpt-oss**: rendered, harmony (``harmony/harmonyparser.go``):
  always reasons, whatever ``think`` says;
* any other name is **llama3.1**: rendered from its Go template, whose tool tag is
  ``{`` (``tools/template.go``, ``parseTag``), no thinking;
* **native** is never chosen by name: give it with the ``profiles`` knob
  (``{"my-gguf:latest": "native"}``), which overrides the rule for any model.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from .config import SimConfig
from .wire import JsonObject, canonical_name


@dataclasses.dataclass(frozen=True, slots=True)
class Profile:
    """One kind of model: its path through Ollama, its parser's behaviour and its metadata.

    ``tool_tag`` is what Ollama's parser looks for: ``{`` means any text before
    the JSON switches tool parsing off (``tools/tools.go``, ``Parser.Add``).
    ``kv_bytes_per_token`` sizes llama-server's RAM prompt cache entries.
    """

    name: str
    template: str  # the prompt format: "llama3", "chatml" or "harmony"
    native: bool
    tool_tag: str
    thinking: bool
    always_thinks: bool
    capabilities: tuple[str, ...]
    details: JsonObject
    model_info: JsonObject
    size: int
    context_length: int
    embedding_length: int
    kv_bytes_per_token: int
    license: str
    show_template: str


_LLAMA_TEMPLATE: Final = (
    "{{- if or .System .Tools }}<|start_header_id|>system<|end_header_id|>{{ .System }}<|eot_id|>"
    "{{- end }}{{- range $i, $_ := .Messages }}{{- $last := eq (len (slice $.Messages $i)) 1 }}"
    "<|start_header_id|>{{ .Role }}<|end_header_id|>{{- if and $.Tools $last }}{{ $.Tools }}"
    "{{- end }}{{ .Content }}{{- if .ToolCalls }}{{ range .ToolCalls }}"
    '{"name": "{{ .Function.Name }}", "parameters": {{ .Function.Arguments }}}{{ end }}'
    "{{- end }}<|eot_id|>{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
)
_CHATML_TEMPLATE: Final = (
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}{{- if .ToolCalls }}"
    '<tool_call>\n{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}'
    "\n</tool_call>{{- end }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
    "{{- if .Think }}<think>\n{{ end }}"
)

_LLAMA: Final = Profile(
    name="llama3.1",
    template="llama3",
    native=False,
    tool_tag="{",
    thinking=False,
    always_thinks=False,
    capabilities=("completion", "tools"),
    details={
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "8.0B",
        "quantization_level": "Q4_K_M",
    },
    model_info={
        "general.architecture": "llama",
        "general.basename": "Meta-Llama-3.1",
        "general.file_type": 15,
        "general.parameter_count": 8_030_261_248,
        "general.quantization_version": 2,
        "llama.attention.head_count": 32,
        "llama.attention.head_count_kv": 8,
        "llama.block_count": 32,
        "llama.context_length": 131_072,
        "llama.embedding_length": 4096,
        "llama.feed_forward_length": 14_336,
        "llama.vocab_size": 128_256,
    },
    size=4_920_753_328,
    context_length=131_072,
    embedding_length=4096,
    kv_bytes_per_token=131_072,  # 32 layers x 8 KV heads x 128 x (K, V) x f16
    license="LLAMA 3.1 COMMUNITY LICENSE AGREEMENT",
    show_template=_LLAMA_TEMPLATE,
)
_QWEN: Final = Profile(
    name="qwen3",
    template="chatml",
    native=False,
    tool_tag="<tool_call>",
    thinking=True,
    always_thinks=False,
    capabilities=("completion", "tools", "thinking"),
    details={
        "parent_model": "",
        "format": "gguf",
        "family": "qwen3",
        "families": ["qwen3"],
        "parameter_size": "8.2B",
        "quantization_level": "Q4_K_M",
    },
    model_info={
        "general.architecture": "qwen3",
        "general.basename": "Qwen3",
        "general.file_type": 15,
        "general.parameter_count": 8_190_735_360,
        "general.quantization_version": 2,
        "qwen3.attention.head_count": 32,
        "qwen3.attention.head_count_kv": 8,
        "qwen3.block_count": 36,
        "qwen3.context_length": 40_960,
        "qwen3.embedding_length": 4096,
        "qwen3.feed_forward_length": 12_288,
    },
    size=5_225_388_164,
    context_length=40_960,
    embedding_length=4096,
    kv_bytes_per_token=147_456,  # 36 layers x 8 KV heads x 128 x (K, V) x f16
    license="Apache License 2.0",
    show_template=_CHATML_TEMPLATE,
)
_GPT_OSS: Final = Profile(
    name="gpt-oss",
    template="harmony",
    native=False,
    tool_tag="<|call|>",
    thinking=True,
    always_thinks=True,
    capabilities=("completion", "tools", "thinking"),
    details={
        "parent_model": "",
        "format": "gguf",
        "family": "gptoss",
        "families": ["gptoss"],
        "parameter_size": "20.9B",
        "quantization_level": "MXFP4",
    },
    model_info={
        "general.architecture": "gptoss",
        "general.file_type": 4,
        "general.parameter_count": 20_914_757_184,
        "general.quantization_version": 2,
        "gptoss.attention.head_count": 64,
        "gptoss.attention.head_count_kv": 8,
        "gptoss.block_count": 24,
        "gptoss.context_length": 131_072,
        "gptoss.embedding_length": 2880,
    },
    size=13_780_173_734,
    context_length=131_072,
    embedding_length=2880,
    kv_bytes_per_token=49_152,  # 24 layers x 8 KV heads x 64 x (K, V) x f16
    license="Apache License 2.0",
    show_template="{{- /* harmony */ -}}<|start|>system<|message|>{{ .System }}<|end|>",
)
_NATIVE: Final = dataclasses.replace(
    _LLAMA,
    name="native",
    template="chatml",
    native=True,
    tool_tag="<tool_call>",
    show_template=(
        "{%- for message in messages %}<|im_start|>{{ message.role }}\n"
        "{{ message.content }}<|im_end|>\n{%- endfor %}<|im_start|>assistant\n"
    ),
)

PROFILES: Final[dict[str, Profile]] = {
    profile.name: profile for profile in (_LLAMA, _QWEN, _GPT_OSS, _NATIVE)
}


def profile_for(model: str, config: SimConfig) -> Profile:
    """The profile of ``model`` (any spelling): the ``profiles`` knob, else the name's family."""
    canonical = canonical_name(model)
    for name, profile in config.profiles.items():
        if canonical_name(name) == canonical:
            return PROFILES[profile]
    base = canonical.rpartition("/")[2]
    if base.startswith("qwen3"):
        return _QWEN
    if base.startswith("gpt-oss"):
        return _GPT_OSS
    return _LLAMA
