"""The Python SDK's own OAuth client against the gateway example: the 401 of one service behind
the gateway, discovery, registration and sign-in at the gateway's authorization server (the dev
login driven like a browser), then the backend's tools through the gateway. Prints one JSON
report. Run by tests/it/gateway_example_tests.rs with the pinned SDK (requirements.txt)."""

import asyncio
import json
import re
import sys
from urllib.parse import parse_qs, urlparse

import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)

MCP_URL = sys.argv[1]
BASE = f"{urlparse(MCP_URL).scheme}://{urlparse(MCP_URL).netloc}"
REDIRECT = "http://127.0.0.1:4567/callback"


class Memory(TokenStorage):
    def __init__(self):
        self.tokens = None
        self.client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull):
        self.client_info = client_info


def field(html: str, name: str) -> str:
    return re.search(f'name="{name}" value="([^"]*)"', html).group(1)


report = {}
answer = {}
browser = httpx2.AsyncClient(follow_redirects=False)


async def redirect_handler(url: str) -> None:
    """The person's browser: the prefilled dev login, then the consent page."""
    report["authorization"] = url
    login = (await browser.get(url)).text
    consent = await browser.post(
        f"{BASE}/oauth/login",
        data={k: field(login, k) for k in ("request", "csrf", "username", "password")},
    )
    back = await browser.post(
        f"{BASE}/oauth/consent",
        data={"request": field(consent.text, "request"), "csrf": field(consent.text, "csrf"), "decision": "approve"},
    )
    query = parse_qs(urlparse(back.headers["location"]).query)
    answer.update(code=query["code"][0], state=query.get("state", [None])[0], iss=query.get("iss", [None])[0])


async def callback_handler() -> AuthorizationCodeResult:
    return AuthorizationCodeResult(**answer)


async def main():
    storage = Memory()
    auth = OAuthClientProvider(
        server_url=MCP_URL,
        client_metadata=OAuthClientMetadata(
            client_name="python-sdk gateway e2e",
            redirect_uris=[REDIRECT],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    async with httpx2.AsyncClient(auth=auth, timeout=30) as http:
        async with Client(streamable_http_client(MCP_URL, http_client=http)) as client:
            tools = sorted(t.name for t in (await client.list_tools()).tools)
            who = await client.call_tool("whoami", {})
            await client.call_tool("add_note", {"text": "from the Python SDK"})
            notes = await client.call_tool("list_notes", {})
            try:
                denied = await client.call_tool("third_party_profile", {})
                report["denied"] = {"isError": denied.is_error, "text": denied.content[0].text}
            except Exception as e:  # the SDK raises JSON-RPC errors
                report["denied"] = {"error": str(e)}
    report.update(
        iss=answer.get("iss"),
        scope=storage.tokens.scope if storage.tokens else None,
        client_id=storage.client_info.client_id if storage.client_info else None,
        tools=tools,
        who=who.content[0].text,
        notes=notes.content[0].text,
    )
    print(json.dumps(report))


asyncio.run(main())
