"""The standard tool set the router, `chat` and `serve` offer: `calculator`, plus `search` when an index path
is given and `http_request` when an allowlist is given (nothing reaches the network without one)."""

from hessgpt.tools.calculator import calculator_tool
from hessgpt.tools.http import HttpFetcher, http_tool
from hessgpt.tools.registry import ToolRegistry
from hessgpt.tools.search import SearchIndex, search_tool


def default_registry(search_index: str | None = None, http_allowed_hosts: list[str] | None = None) -> ToolRegistry:
    """The standard tools: `calculator`, plus `search` when an index path is given and `http_request`
    when an allowlist is given (nothing reaches the network without one)."""
    reg = ToolRegistry([calculator_tool()])
    if search_index:
        reg.register(search_tool(SearchIndex(search_index)))
    if http_allowed_hosts:
        reg.register(http_tool(HttpFetcher(allowed_hosts=http_allowed_hosts)))
    return reg
