"""The Swagger UI page at /docs in Chromium: it renders every REST operation."""

from __future__ import annotations

import httpx
import pytest

from prim.edge.openapi import SCHEMA

from helpers import edge_url

pytestmark = pytest.mark.integration

METHODS = ("get", "post", "put", "delete", "patch")


async def test_docs_page_lists_operations(cluster, open_page):
    opened = await open_page(f"{edge_url(cluster, 0)}/docs")
    page = opened.page
    operations = sum(
        1 for item in SCHEMA["paths"].values() for method in item if method in METHODS
    )
    await page.wait_for_selector(".opblock")
    try:
        assert await page.locator(".opblock").count() == operations
        assert await page.locator(".errors-wrapper").count() == 0
        assert "Unable to render" not in await page.inner_text("body")
        assert await page.inner_text(".info .title") != ""
        assert opened.errors == []
    finally:
        await opened.screenshot("docs")


async def test_docs_static_serves_page_files_only(cluster):
    async with httpx.AsyncClient(base_url=edge_url(cluster, 0)) as http:
        bundle = await http.get("/docs/static/swagger-ui-bundle.js")
        stock_page = await http.get("/docs/static/swagger-initializer.js")
    assert bundle.status_code == 200
    assert stock_page.status_code == 404
