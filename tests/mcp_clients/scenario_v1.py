"""The mcp 1.x Python SDK's client running the matrix scenario (tests/mcp_matrix_helpers.py).

Runs under a venv with ``mcp==1.30.0`` that the matrix test makes, never the project's
own. Usage: ``python scenario_v1.py PLAN.json``; prints one JSON transcript on stdout. The
1.x ``ClientSession`` validates structured content against the output schema itself.
"""

import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamablehttp_client


def dump(model):
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def run(session, steps):
    await session.initialize()
    transcript = {
        "tools": [dump(t) for t in (await session.list_tools()).tools],
        "resources": [str(r.uri) for r in (await session.list_resources()).resources],
        "prompts": [p.name for p in (await session.list_prompts()).prompts],
        "calls": [],
    }
    for step in steps:
        r = await session.call_tool(step["tool"], step["arguments"])
        transcript["calls"].append(
            {
                "tool": step["tool"],
                "isError": r.isError,
                "structuredContent": r.structuredContent,
                "text": "".join(c.text for c in r.content if c.type == "text"),
            }
        )
    return transcript


async def main(plan):
    if plan["transport"] == "http":
        opened = streamablehttp_client(plan["url"])
        async with opened as (read, write, _), ClientSession(read, write) as session:
            return await run(session, plan["steps"])
    params = StdioServerParameters(command=plan["command"], args=plan["args"], env=plan["env"])
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        return await run(session, plan["steps"])


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(json.dumps(asyncio.run(main(json.load(f)))))
