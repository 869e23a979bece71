"""End-to-end: the official OpenAI Python SDK against a real Sluice replica (the `gateway`
fixture in conftest.py), talking to it only through the SDK.
"""
import json
import os
import shutil
import subprocess
import time
import urllib.request

import openai
import pytest
from openai import OpenAI


def client(gateway, key=None):
    return OpenAI(base_url=gateway["base_url"], api_key=key or gateway["key"], max_retries=0)


def test_chat_completion(gateway):
    reply = client(gateway).chat.completions.create(model="sdk-model", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "tok tok tok tok tok tok"
    assert reply.usage.completion_tokens == 6


def test_chat_stream_hides_the_usage_chunk_unless_asked(gateway):
    chunks = list(client(gateway).chat.completions.create(
        model="sdk-model", messages=[{"role": "user", "content": "hi"}], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok " * 6
    assert all(c.usage is None for c in chunks)

    chunks = list(client(gateway).chat.completions.create(
        model="sdk-model", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens == 6


def test_completions_embeddings_and_models(gateway):
    sdk = client(gateway)
    assert sdk.completions.create(model="sdk-model", prompt="hi", max_tokens=2).choices[0].text == "tok tok"
    assert len(sdk.embeddings.create(model="sdk-model", input="hi").data[0].embedding) == 8
    assert [m.id for m in sdk.models.list()] == ["sdk-model"]


def test_rate_limit_is_a_rate_limit_error_with_headers(gateway):
    sdk = client(gateway, gateway["limited_key"])
    sdk.chat.completions.create(model="sdk-model", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError) as raised:
        sdk.chat.completions.create(model="sdk-model", messages=[{"role": "user", "content": "hi"}])
    headers = raised.value.response.headers
    assert int(headers["retry-after"]) >= 1
    assert headers["x-ratelimit-limit-requests"] == "1"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert raised.value.code == "rate_limit_exceeded"


def test_bad_key_is_an_authentication_error(gateway):
    with pytest.raises(openai.AuthenticationError) as raised:
        client(gateway, "slk_not_a_real_key").chat.completions.create(
            model="sdk-model", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.code == "invalid_api_key"


def test_unknown_model_is_not_found(gateway):
    with pytest.raises(openai.NotFoundError) as raised:
        client(gateway).chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.code == "model_not_found"


PROMTOOL = shutil.which("promtool")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) is not installed")
def test_metrics_and_alert_rules_pass_promtool(gateway):
    client(gateway).chat.completions.create(model="sdk-model", messages=[{"role": "user", "content": "hi"}])
    metrics = urllib.request.urlopen(f"{gateway['admin_url']}/metrics", timeout=5).read()
    checked = subprocess.run([PROMTOOL, "check", "metrics"], input=metrics, capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = subprocess.run([PROMTOOL, "check", "rules", os.path.join(ROOT, "deploy", "prometheus-alerts.yaml")],
                           capture_output=True, text=True)
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_access_log_is_json_lines_without_secrets(gateway):
    marker = "log-check-" + os.urandom(4).hex()
    client(gateway).with_options(default_headers={"x-request-id": marker}).chat.completions.create(
        model="sdk-model", messages=[{"role": "user", "content": "hi"}])
    deadline = time.time() + 5
    while True:  # the log writer flushes in the background, within tens of milliseconds
        lines = open(gateway["log_path"]).read().splitlines()
        records = [json.loads(line) for line in lines]  # every line is one JSON object
        mine = [r for r in records if r.get("client_request_id") == marker]
        if mine or time.time() > deadline:
            break
        time.sleep(0.05)
    assert len(mine) == 1, lines[-5:]
    line = mine[0]
    assert list(line)[:5] == ["ts", "level", "logger", "msg", "request_id"]
    assert line["status"] == 200 and line["model"] == "sdk-model" and line["completion_tokens"] == 6
    assert line["request_id"] != marker and line["usage_source"] == "backend"
    text = "\n".join(lines)
    for secret in (gateway["key"], gateway["limited_key"], gateway["admin_token"]):
        assert secret not in text
