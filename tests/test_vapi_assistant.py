"""The assistant file, checked against VAPI's limits, and ``python -m server vapi-assistant``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from server.config import ConfigError
from server.doors.vapi import SERVER_MESSAGES, load_assistant_spec

from .conftest import ROOT, FakeOllama, start_server
from .vapi_bodies import ASSISTANT_SPEC, HMAC_SECRET, PUBLIC_URL, SECRET

_SETTINGS_ENV = (
    "PUBLIC_URL", "VAPI_SECRET", "VAPI_HMAC_SECRET", "ASSISTANT_FILE", "MODEL", "SYSTEM_PROMPT",
    "API_KEY", "TOOLS_MODULE",
)  # fmt: skip


def run_command(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m server vapi-assistant`` with only the given settings in its env."""
    environment = {k: v for k, v in os.environ.items() if k not in _SETTINGS_ENV}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "server", "vapi-assistant", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture(scope="module")
def assistant_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vapi") / "assistant.json"
    path.write_text(json.dumps(ASSISTANT_SPEC))
    return path


# The assistant file: VAPI's limits and enums, each a one-line error naming the field

TRANSFER_NUMBER = {"type": "number", "number": "+15555550100"}


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"maxTokens": 49}, "maxTokens: Input should be greater than or equal to 50"),
        ({"maxTokens": 10001}, "maxTokens: Input should be less than or equal to 10000"),
        ({"maxTokens": 250.5}, "maxTokens: Input should be a valid integer"),
        ({"temperature": -0.1}, "temperature: Input should be greater than or equal to 0"),
        ({"temperature": 2.5}, "temperature: Input should be less than or equal to 2"),
        ({"temperature": "warm"}, "temperature: Input should be a valid number"),
        ({"name": "n" * 41}, "name: String should have at most 40 characters"),
        ({"name": ""}, "name: String should have at least 1 character"),
        ({"metadataSendMode": "all"}, "metadataSendMode: Input should be 'off', 'variable'"),
        (
            {"serverMessages": ["tool-calls", "assistant-request"]},
            "serverMessages: ['assistant-request'] are not among the values VAPI accepts",
        ),
        (
            {"serverMessages": ["coffee", "end-of-call-report"]},
            "serverMessages: ['coffee'] are not among the values VAPI accepts",
        ),
        ({"voice": {"voiceId": "Elliot"}}, "voice: needs a 'provider' string, as VAPI requires"),
        ({"extra": {"model": {}}}, "extra: ['model'] are set by the server"),
        ({"tools": [{"function": {"name": "x"}}]}, "tools: item 0 needs a 'type' string"),
        ({"toolIds": "abc"}, "toolIds: Input should be a valid list"),
        ({"firstMesage": "Hi"}, "firstMesage: Extra inputs are not permitted"),
        (
            {"transferDestinations": [{"type": "phone", "number": "+15555550100"}]},
            "transferDestinations: item 0: 'type' must be one of 'number', 'sip', 'assistant'",
        ),
        (
            {"transferDestinations": [TRANSFER_NUMBER, {"type": "sip"}]},
            "transferDestinations: item 1: a 'sip' destination needs 'sipUri'",
        ),
        (
            {"transferDestinations": [{"type": "number", "number": "555-0100"}]},
            "transferDestinations: item 0: 'number' must be E.164, like +15555550100",
        ),
        (
            {"transferDestinations": ["+15555550100"]},
            "transferDestinations: item 0 must be an object, a VAPI transfer destination",
        ),
        (
            {"handoffDestinations": [{"type": "dynamic"}]},
            "handoffDestinations: item 0: 'type' must be one of 'assistant', 'squad'",
        ),
        (
            {"handoffDestinations": [{"type": "assistant", "description": "sales"}]},
            "handoffDestinations: item 0: a 'assistant' destination needs 'assistantId' or "
            "'assistantName' or 'assistant'",
        ),
    ],
)
def test_each_limit_of_the_assistant_file_is_a_one_line_error(
    tmp_path: Path, spec: dict[str, Any], reason: str
) -> None:
    path = tmp_path / "assistant.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(ConfigError) as raised:
        load_assistant_spec(str(path))
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"assistant file '{path}': ")
    assert reason in message


def test_tools_of_the_file_follow_the_registrys(tmp_path: Path) -> None:
    path = tmp_path / "assistant.json"
    end_call = {"type": "endCall"}
    path.write_text(json.dumps({"tools": [end_call], "toolIds": ["tool-7"]}))
    done = run_command(
        "--public-url", PUBLIC_URL,
        "--assistant-file", str(path),
        "--tools-module", "tests.test_vapi_tools",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    model = json.loads(done.stdout)["model"]
    assert model["tools"][0]["function"]["name"] == "book_cleaning"
    assert model["tools"][-1] == end_call
    assert model["toolIds"] == ["tool-7"]


def test_values_at_vapis_limits_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "assistant.json"
    for spec in (
        {"maxTokens": 50, "temperature": 0},
        {"maxTokens": 10000, "temperature": 2, "name": "n" * 40},
        {
            "transferDestinations": [
                {"type": "number", "number": "555", "numberE164CheckEnabled": False}
            ]
        },
        {"handoffDestinations": [{"type": "squad", "squadId": "squad-1"}]},
    ):
        path.write_text(json.dumps(spec))
        load_assistant_spec(str(path))


def test_every_server_message_vapi_accepts_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "assistant.json"
    path.write_text(json.dumps({"serverMessages": list(SERVER_MESSAGES)}))
    assert load_assistant_spec(str(path)).serverMessages == list(SERVER_MESSAGES)


def test_an_invalid_assistant_file_stops_the_server_at_startup(
    fake: FakeOllama, tmp_path: Path
) -> None:
    path = tmp_path / "assistant.json"
    path.write_text(json.dumps({"maxTokens": 20000}))
    with pytest.raises(RuntimeError, match="the server exited") as exited:
        start_server(fake.url, "--vapi-secret", SECRET, "--assistant-file", str(path))
    assert (
        f"python -m server: error: assistant file '{path}': maxTokens: Input should be less "
        "than or equal to 10000"
    ) in str(exited.value)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "is not valid JSON"),
        ('{"temperature": 3}', "temperature: Input should be less than or equal to 2"),
        ('{"serverMessages": ["tool-calls", "coffee"]}', "['coffee'] are not among the values"),
    ],
)
def test_command_names_the_fault_in_an_assistant_file(
    tmp_path: Path, content: str, reason: str
) -> None:
    path = tmp_path / "assistant.json"
    path.write_text(content)
    done = run_command("--public-url", PUBLIC_URL, "--assistant-file", str(path))
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith(f"python -m server vapi-assistant: error: assistant file '{path}'")
    assert reason in line


# The command


def test_command_prints_the_assistant_for_a_pod(assistant_file: Path) -> None:
    done = run_command(
        "--public-url", "https://abc123-8000.proxy.runpod.net/",
        "--model", "qwen2.5:7b",
        "--webhook-credential-id", "cred-1234",
        ASSISTANT_FILE=str(assistant_file),
        VAPI_SECRET=SECRET,
        API_KEY="k",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assistant = json.loads(done.stdout)
    assert assistant["model"]["provider"] == "custom-llm"
    assert assistant["model"]["url"] == "https://abc123-8000.proxy.runpod.net/v1"
    assert assistant["model"]["model"] == "qwen2.5:7b"
    assert assistant["model"]["metadataSendMode"] == "off"
    assert assistant["firstMessage"] == ASSISTANT_SPEC["firstMessage"]
    assert assistant["voice"] == ASSISTANT_SPEC["voice"]
    assert assistant["server"] == {
        "url": "https://abc123-8000.proxy.runpod.net/vapi/webhook",
        "credentialId": "cred-1234",
    }
    assert "transferDestinations" not in assistant
    assert "handoffDestinations" not in assistant
    assert assistant["model"]["tools"] == ASSISTANT_SPEC["tools"]
    assert "toolIds" not in assistant["model"]
    assert SECRET not in done.stdout
    assert all(line.startswith("# ") for line in done.stderr.splitlines())
    assert '"provider": "custom-llm"' in done.stderr
    assert "curl -X POST https://api.vapi.ai/assistant" in done.stderr
    assert "warning" not in done.stderr


def test_command_without_a_webhook_secret_has_no_server() -> None:
    done = run_command(
        "--public-url", "https://voice.example.com/v1", "--system-prompt", "Be kind."
    )
    assert done.returncode == 0, done.stderr
    assistant = json.loads(done.stdout)
    assert assistant["model"]["url"] == "https://voice.example.com/v1"
    assert assistant["model"]["messages"] == [{"role": "system", "content": "Be kind."}]
    assert assistant["name"] == "Voice assistant"
    assert "server" not in assistant
    assert "No webhook: start the server with VAPI_SECRET" in done.stderr
    assert "API_KEY is not set here" in done.stderr
    assert "systemPrompt replaces it" not in done.stderr


def test_command_says_when_the_assistant_files_prompt_replaces_system_prompt(
    assistant_file: Path,
) -> None:
    done = run_command(
        "--public-url", PUBLIC_URL,
        "--assistant-file", str(assistant_file),
        "--system-prompt", "Be kind.",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    messages = json.loads(done.stdout)["model"]["messages"]
    assert messages == [{"role": "system", "content": ASSISTANT_SPEC["systemPrompt"]}]
    assert (
        "# --system-prompt (SYSTEM_PROMPT) is not in the assistant: the assistant file's "
        "systemPrompt replaces it"
    ) in done.stderr.splitlines()


@pytest.mark.parametrize(
    ("args", "warned"),
    [
        (("--public-url", "http://voice.example.com"), ["http://voice.example.com/v1"]),
        (
            ("--public-url", "http://10.0.0.5:8000", "--vapi-secret", SECRET),
            ["http://10.0.0.5:8000/v1", "http://10.0.0.5:8000/vapi/webhook"],
        ),
        (
            (
                "--serverless",
                "r2d2xyz9",
                "--public-url",
                "http://pod.example.com",
                "--vapi-secret",
                "s",
            ),
            ["http://pod.example.com/vapi/webhook"],
        ),
    ],
)
def test_command_warns_about_http_urls(args: tuple[str, ...], warned: list[str]) -> None:
    done = run_command(*args)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("# warning:")]
    assert warnings == [
        f"# warning: {url} is http://, and VAPI calls only https:// URLs: give the public "
        "https:// URL (RunPod's proxy, or a TLS proxy in front of the server)"
        for url in warned
    ]


def test_the_server_warns_about_an_http_public_url(fake: FakeOllama) -> None:
    process = start_server(fake.url, "--public-url", "http://voice.example.com")
    process.stop()
    assert b"VAPI assistant: warning: http://voice.example.com/v1 is http://" in (process.output())


def test_command_with_an_hmac_secret_explains_the_credential() -> None:
    done = run_command("--public-url", PUBLIC_URL, VAPI_HMAC_SECRET=HMAC_SECRET)
    assert done.returncode == 0, done.stderr
    server = json.loads(done.stdout)["server"]
    assert server["url"] == f"{PUBLIC_URL}/vapi/webhook"
    assert server["credentialId"] == "REPLACE-WITH-YOUR-WEBHOOK-CREDENTIAL-ID"
    assert (
        "an HMAC credential (algorithm sha256, signature header x-signature, timestamp header "
        "x-timestamp, payload format {timestamp}.{body}, hex or base64 encoding) with "
        "VAPI_HMAC_SECRET"
    ) in done.stderr
    custom = run_command(
        "--public-url", PUBLIC_URL,
        "--vapi-hmac-algorithm", "sha512",
        "--vapi-hmac-include-timestamp", "false",
        "--vapi-hmac-signature-prefix", "v1=",
        VAPI_HMAC_SECRET=HMAC_SECRET,
    )  # fmt: skip
    assert (
        "(algorithm sha512, signature header x-signature, no timestamp, payload format {body}, "
        "signature prefix v1=, hex or base64 encoding)"
    ) in custom.stderr


def test_command_with_a_bearer_header_names_it() -> None:
    done = run_command(
        "--public-url", PUBLIC_URL, "--vapi-secret-header-name", "X-Api-Token", VAPI_SECRET=SECRET
    )
    assert "a Bearer Token credential with VAPI_SECRET (header X-Api-Token" in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--serverless", "r2d2xyz9"),
        ("--public-url", "https://api.runpod.ai/v2/r2d2xyz9/openai"),
        ("--public-url", "https://api.runpod.ai/v2/r2d2xyz9/openai/v1"),
    ],
)
def test_command_for_runpod_serverless(args: tuple[str, str]) -> None:
    done = run_command(*args, VAPI_SECRET=SECRET)
    assert done.returncode == 0, done.stderr
    assistant = json.loads(done.stdout)
    assert assistant["model"]["url"] == "https://api.runpod.ai/v2/r2d2xyz9/openai/v1"
    assert "server" not in assistant
    assert "RunPod API key" in done.stderr


def test_command_serverless_model_with_a_pod_webhook() -> None:
    done = run_command("--serverless", "r2d2xyz9", "--public-url", PUBLIC_URL, VAPI_SECRET=SECRET)
    assert done.returncode == 0, done.stderr
    assistant = json.loads(done.stdout)
    assert assistant["model"]["url"] == "https://api.runpod.ai/v2/r2d2xyz9/openai/v1"
    assert assistant["server"]["url"] == f"{PUBLIC_URL}/vapi/webhook"


def test_the_readmes_assistant_is_what_its_command_prints() -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(
        r"```sh\n(\.venv/bin/python -m server vapi-assistant [^\n]*(?:\\\n[^\n]*)*)\n```"
        r"(?:(?!```).)*```json\n(.*?)\n```",
        readme,
        re.DOTALL,
    )
    assert match is not None, "the README shows the command, then the JSON it prints"
    command = match.group(1).replace("\\\n", " ").split()
    assert command[:4] == [".venv/bin/python", "-m", "server", "vapi-assistant"]
    args = command[4 : command.index(">")] if ">" in command else command[4:]
    done = run_command(*args)
    assert done.returncode == 0, done.stderr
    assert json.loads(match.group(2)) == json.loads(done.stdout)
    assert "# warning" not in done.stderr


def test_command_accepts_the_example_assistant_file() -> None:
    done = run_command(
        "--public-url", PUBLIC_URL, "--assistant-file", str(ROOT / "examples" / "assistant.json")
    )
    assert done.returncode == 0, done.stderr
    example = json.loads((ROOT / "examples" / "assistant.json").read_text())
    assistant = json.loads(done.stdout)
    assert assistant["firstMessage"] == example["firstMessage"]
    assert assistant["transcriber"] == example["transcriber"]
    for key, value in example["extra"].items():
        assert assistant[key] == value


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ((), "give --public-url URL (or PUBLIC_URL) or --serverless ENDPOINT_ID"),
        (("--public-url", "ftp://voice.example.com"), "must look like https://host"),
        (("--serverless", "r2/../d2"), "has characters ids never have"),
        (
            ("--public-url", PUBLIC_URL, "--assistant-file", "/nonexistent/assistant.json"),
            "cannot be read: No such file or directory",
        ),
        (("--public-url", PUBLIC_URL, "--model", "two words"), "is empty or contains spaces"),
        (
            ("--public-url", PUBLIC_URL, "--tools-module", "tests.no_such_module"),
            "tools module 'tests.no_such_module' cannot be imported",
        ),
    ],
)
def test_command_errors_are_one_line(args: tuple[str, ...], reason: str) -> None:
    done = run_command(*args)
    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("python -m server vapi-assistant: error: ")
    assert reason in line
