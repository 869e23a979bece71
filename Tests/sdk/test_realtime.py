"""OpenAI Realtime over WebSocket through the gateway, with a real WebSocket client (the
`websockets` package): sessions with several responses metered into the ledger, browser-style
key subprotocols, refusals as HTTP answers to the handshake, a limit hit mid-session, the
concurrency slot held across replicas and freed by a client that vanishes."""
import asyncio
import json
import os
import time
import urllib.error
import urllib.request

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import key_usage, running_gateway


def ws_url(gateway, model="sdk-model"):
    return gateway["base_url"].replace("http://", "ws://") + f"/realtime?model={model}"


def connect(gateway, key=None, subprotocols=None, model="sdk-model"):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return websockets.connect(ws_url(gateway, model), additional_headers=headers, subprotocols=subprotocols,
                              open_timeout=10, close_timeout=5)


async def next_event(ws, type_):
    """Reads events until one of `type_` (an `error` event is returned as it comes)."""
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if event["type"] in (type_, "error"):
            return event


async def respond(ws):
    await ws.send(json.dumps({"type": "response.create", "response": {"modalities": ["text"]}}))
    return await next_event(ws, "response.done")


async def respond_once_admitted(gateway, key, failure, seconds=10):
    """A response in a new session, once the handshake is admitted (within `seconds`)."""
    deadline = time.time() + seconds
    while True:
        try:
            async with connect(gateway, key) as ws:
                return (await respond(ws))["type"]
        except InvalidStatus:
            assert time.time() < deadline, failure
            await asyncio.sleep(0.1)


def new_key(gateway, *flags):
    return gateway["cli"]("create-key", "--tenant", gateway["tenant"], "--name", "realtime", *flags)


def test_a_session_with_several_responses_is_metered_per_response(gateway):
    key = new_key(gateway)

    async def session():
        async with connect(gateway, key, subprotocols=["realtime"]) as ws:
            assert ws.subprotocol == "realtime"
            assert (await next_event(ws, "session.created"))["type"] == "session.created"
            return [await respond(ws) for _ in range(3)]

    done = asyncio.run(session())
    assert [event["type"] for event in done] == ["response.done"] * 3
    usage = [event["response"]["usage"] for event in done]
    # The session's own row (nothing) and one row per response.
    row = key_usage(gateway, key, rows_wanted=4)
    assert row["prompt_tokens"] == sum(u["input_tokens"] for u in usage)
    assert row["completion_tokens"] == sum(u["output_tokens"] for u in usage) == 18


def test_a_browser_sends_its_key_as_a_subprotocol_and_never_gets_it_back(gateway):
    key = new_key(gateway)

    async def session():
        offered = ["realtime", f"openai-insecure-api-key.{key}", "openai-beta.realtime-v1"]
        async with connect(gateway, subprotocols=offered) as ws:
            assert ws.subprotocol == "realtime"
            assert key not in str(ws.response.headers)
            return (await respond(ws))["type"]

    assert asyncio.run(session()) == "response.done"


@pytest.mark.parametrize("key_kind, model, status, code", [
    ("forged", "sdk-model", 401, "invalid_api_key"),
    ("none", "sdk-model", 401, "invalid_api_key"),
    ("valid", "no-such-model", 404, "model_not_found"),
])
def test_a_refused_handshake_is_an_http_answer_in_openai_shape(gateway, key_kind, model, status, code):
    key = {"forged": "slk_AAAAAAAAAAAA_" + "x" * 40, "none": None, "valid": gateway["key"]}[key_kind]

    async def attempt():
        with pytest.raises(InvalidStatus) as refused:
            async with connect(gateway, key, model=model):
                pass
        return refused.value.response

    response = asyncio.run(attempt())
    assert response.status_code == status
    assert json.loads(response.body)["error"]["code"] == code


def test_a_plain_get_is_told_to_upgrade(gateway):
    request = urllib.request.Request(gateway["base_url"] + "/realtime?model=sdk-model", headers={"authorization": "Bearer " + gateway["key"]})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400
    assert "WebSocket" in json.load(refused.value)["error"]["message"]


def test_a_limit_hit_mid_session_ends_it_with_an_error_event_and_both_responses_are_billed(gateway):
    key = new_key(gateway, "--tpm", "30")  # a response is 18 tokens: the second one goes over

    async def session():
        async with connect(gateway, key) as ws:
            first = await respond(ws)
            second = await respond(ws)
            error = second if second["type"] == "error" else await next_event(ws, "error")
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            return first, error

    first, error = asyncio.run(session())
    assert first["type"] == "response.done"
    assert error["type"] == "error" and error["error"]["code"] == "rate_limit_exceeded", error
    row = key_usage(gateway, key, rows_wanted=3)
    assert row["completion_tokens"] == 12, "the refused response was generated, so it is billed"


def test_a_session_holds_its_slot_across_replicas_until_it_ends():
    database = os.environ["SLUICE_TEST_DATABASE_URL"]
    with running_gateway(database) as first, running_gateway(database) as second:
        key = new_key(first, "--concurrency", "1")

        async def scenario():
            async with connect(first, key) as ws:
                await next_event(ws, "session.created")
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(second, key):
                        pass
                assert refused.value.response.status_code == 429
                await respond(ws)
            # Closed: the other replica admits a session again.
            return await respond_once_admitted(second, key, "the ended session kept its slot")

        assert asyncio.run(scenario()) == "response.done"


def test_a_client_that_vanishes_frees_its_slot(gateway):
    key = new_key(gateway, "--concurrency", "1")

    async def scenario():
        ws = await connect(gateway, key)
        await next_event(ws, "session.created")
        ws.transport.abort()  # gone without a close frame
        return await respond_once_admitted(gateway, key, "the vanished client's session kept its slot")

    assert asyncio.run(scenario()) == "response.done"
