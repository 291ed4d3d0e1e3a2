"""Drives an OpenAI-compatible endpoint with the official OpenAI Python SDK and prints one JSON
object: greedy completions and chat, streamed and not, and 16 concurrent chat streams.

usage: sdk_check.py BASE_URL MODEL            (the checks)
       sdk_check.py BASE_URL MODEL hangup N   (open N streams, read 2 chunks each, hang up)
"""
import asyncio
import json
import os
import ssl
import sys

import httpx
from openai import AsyncOpenAI, OpenAI

base, model = sys.argv[1], sys.argv[2]


def tls():
    """Mutual TLS from SDK_CA, SDK_CERT, SDK_KEY, SDK_KEY_PASSWORD_FILE when set."""
    if "SDK_CA" not in os.environ:
        return {}
    ctx = ssl.create_default_context(cafile=os.environ["SDK_CA"])
    with open(os.environ["SDK_KEY_PASSWORD_FILE"]) as f:
        password = f.read().rstrip("\n")
    ctx.load_cert_chain(os.environ["SDK_CERT"], os.environ["SDK_KEY"], password=password)
    return {"verify": ctx}


def sync_http():
    kw = tls()
    return {"http_client": httpx.Client(**kw)} if kw else {}


def async_http():
    kw = tls()
    return {"http_client": httpx.AsyncClient(**kw)} if kw else {}


client = OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120, **sync_http())
PROMPT = "Once upon a time"
MESSAGES = [{"role": "user", "content": "Tell me a story."}]


def checks():
    out = {}
    r = client.completions.create(model=model, prompt=PROMPT, max_tokens=16, temperature=0)
    out["completion"] = r.choices[0].text
    out["completion_tokens"] = r.usage.completion_tokens
    s = client.completions.create(model=model, prompt=PROMPT, max_tokens=16, temperature=0, stream=True)
    out["completion_stream"] = "".join(c.choices[0].text for c in s if c.choices)
    r = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=16, temperature=0)
    out["chat"] = r.choices[0].message.content
    out["chat_finish"] = r.choices[0].finish_reason
    s = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=16, temperature=0, stream=True)
    out["chat_stream"] = "".join((c.choices[0].delta.content or "") for c in s if c.choices)
    out["concurrent"] = asyncio.run(concurrent(16))
    return out


async def one_stream(ac):
    s = await ac.chat.completions.create(model=model, messages=MESSAGES, max_tokens=16, temperature=0, stream=True)
    text = ""
    async for c in s:
        if c.choices:
            text += c.choices[0].delta.content or ""
    return text


async def concurrent(n):
    ac = AsyncOpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=300, **async_http())
    texts = await asyncio.gather(*[one_stream(ac) for _ in range(n)])
    return texts


async def hang_up(n):
    ac = AsyncOpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=300, **async_http())

    async def one():
        s = await ac.completions.create(model=model, prompt=PROMPT, max_tokens=400, temperature=0, stream=True,
                                          extra_body={"ignore_eos": True})
        seen = 0
        async for _ in s:
            seen += 1
            if seen >= 2:
                break
        await s.close()
        return seen

    return await asyncio.gather(*[one() for _ in range(n)])


if len(sys.argv) > 3 and sys.argv[3] == "hangup":
    print(json.dumps({"hung_up": asyncio.run(hang_up(int(sys.argv[4])))}))
else:
    print(json.dumps(checks()))
