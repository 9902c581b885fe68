"""The gateway serves the browser UI from web/."""

from __future__ import annotations

import httpx

from tests.support.servers import RunningServer


async def test_the_ui_is_served_and_revalidated(offline_gateway: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=offline_gateway.http_url) as http:
        page = await http.get("/")
        script = await http.get("/app.js")
        again = await http.get("/app.js", headers={"If-None-Match": script.headers["etag"]})
        missing = await http.get("/nope.js")
    assert page.status_code == 200
    assert "<title>" in page.text
    assert page.headers["cache-control"] == "no-cache"
    assert script.headers["content-type"].startswith("text/javascript")
    assert again.status_code == 304
    assert missing.status_code == 404
