"""Who a request came from (gateway.forwarded): the address the nearest proxy appended to X-Forwarded-For when
the connection came from a proxy inside the network, else the connection's own, whatever its header says."""

from __future__ import annotations

import httpx
import pytest

from gateway.forwarded import PEER, client_address
from gateway.server import running_gateway
from tests.support.gateway import UNUSED_LIVE_URL, settings_for


def scope(peer: str, *forwarded: str) -> dict[str, object]:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    # As uvicorn's proxy middleware leaves it: the client replaced by the header's first address.
    first = forwarded[0].split(",")[0].strip() if forwarded else peer
    return {"type": "http", PEER: peer, "client": (first, 0), "headers": headers}


def test_a_connection_from_the_internet_is_the_client_whatever_its_header_says() -> None:
    assert client_address(scope("1.2.3.4", "203.0.113.1")) == "1.2.3.4"
    assert client_address(scope("2606:4700::7", "203.0.113.1")) == "2606:4700::7"
    assert client_address(scope("1.2.3.4")) == "1.2.3.4"


def test_behind_a_proxy_the_client_is_the_address_the_proxy_appended_not_the_one_the_client_wrote() -> None:
    # Heroku's router (a private address) appends the address it was connected from.
    assert client_address(scope("10.1.2.3", "203.0.113.1, 1.2.3.4")) == "1.2.3.4"
    assert client_address(scope("10.1.2.3", "203.0.113.1", "1.2.3.4")) == "1.2.3.4"  # two headers
    assert client_address(scope("127.0.0.1", "1.2.3.4")) == "1.2.3.4"  # a tunnel on the host
    assert client_address(scope("10.1.2.3")) == "10.1.2.3"  # no header: the proxy is all there is
    assert client_address(scope("10.1.2.3", "")) == "10.1.2.3"
    assert client_address({"type": "http", "headers": []}) == "unknown"  # no client at all (a test client)


@pytest.mark.e2e
async def test_a_client_naming_new_addresses_is_still_held_to_the_sign_in_limit() -> None:
    """Through a real socket from the loopback (a proxy, as ngrok's is): five wrong passwords, each with a
    new first address in X-Forwarded-For and the same one the proxy appended, and the sixth is refused."""
    settings = settings_for(UNUSED_LIVE_URL, CONSOLE_PASSWORD="console-password-1")
    async with running_gateway(settings) as url, httpx.AsyncClient(base_url=url) as client:
        for n in range(5):
            headers = {"X-Forwarded-For": f"203.0.113.{n}, 1.2.3.4"}
            answer = await client.post("/console/login", data={"password": "guess"}, headers=headers)
            assert answer.status_code == 401
        headers = {"X-Forwarded-For": "203.0.113.99, 1.2.3.4"}
        answer = await client.post("/console/login", data={"password": "guess"}, headers=headers)
        assert answer.status_code == 429
        # Another client behind the same proxy is not held up; and the scheme the proxy says is believed.
        headers = {"X-Forwarded-For": "1.2.3.5", "X-Forwarded-Proto": "https"}
        answer = await client.post("/console/login", data={"password": "guess"}, headers=headers)
        assert answer.status_code == 401
