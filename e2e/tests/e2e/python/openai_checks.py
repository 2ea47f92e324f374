"""Checks a Switchyard gateway's HTTP ingress with the stock `openai` client.

Run by the end-to-end suite (e2e/tests/e2e/openai.rs) against a
gateway fronting a toy model server (`switchyard-toy-model`, 20 tokens/s)
behind a node agent's `openai` service. Prints one `ok NAME ...` line per
check; any failure raises (non-zero exit).
"""

import argparse
import json
import time
import urllib.request

import openai


def client(args, key=None, retries=0):
    return openai.OpenAI(
        base_url=args.base_url,
        api_key=key or args.key,
        max_retries=retries,
        timeout=30,
    )


def chat(args):
    done = client(args).chat.completions.create(
        model=args.model,
        messages=[{"role": "user", "content": "the quick brown fox"}],
        max_tokens=5,
    )
    text = done.choices[0].message.content
    assert text == "the quick brown fox the ", text
    assert done.choices[0].finish_reason == "length", done
    assert done.usage.completion_tokens == 5, done.usage
    print("ok chat", json.dumps(text))


def stream(args):
    started = time.monotonic()
    first = None
    chunks = []
    events = client(args).chat.completions.create(
        model=args.alias,
        messages=[{"role": "user", "content": "one two three four"}],
        max_tokens=20,
        stream=True,
    )
    for event in events:
        content = event.choices[0].delta.content if event.choices else None
        if content:
            if first is None:
                first = time.monotonic() - started
            chunks.append(content)
    total = time.monotonic() - started
    assert len(chunks) >= 10, chunks
    assert first is not None and first < total / 2, (first, total)
    assert "".join(chunks).startswith("one two three four one"), chunks
    print(f"ok stream chunks={len(chunks)} first_s={first:.3f} total_s={total:.3f}")


def embeddings(args):
    got = client(args).embeddings.create(
        model=args.model, input=["hello", "world"], encoding_format="float"
    )
    assert len(got.data) == 2, got
    again = client(args).embeddings.create(
        model=args.model, input="hello", encoding_format="float"
    )
    assert again.data[0].embedding == got.data[0].embedding, "deterministic"
    assert got.data[0].embedding != got.data[1].embedding
    print("ok embeddings dim", len(got.data[0].embedding))


def models(args):
    listed = {m.id: m for m in client(args).models.list()}
    assert args.model in listed and args.alias in listed, listed
    assert listed[args.model].created > 1_600_000_000, listed[args.model]
    assert listed[args.alias].created == listed[args.model].created, listed
    one = client(args).models.retrieve(args.alias)
    assert one.id == args.alias and one.owned_by, one
    try:
        client(args).models.retrieve("no-such-model")
    except openai.NotFoundError as e:
        assert e.status_code == 404 and e.code == "model_not_found", e.body
    else:
        raise AssertionError("an unknown model was found")
    print("ok models", ",".join(listed))


def upstream_error(args):
    # The model server refuses an empty `messages`: its own error, status
    # and body, reaches the client unchanged, naming the node.
    try:
        client(args).chat.completions.create(model=args.model, messages=[])
    except openai.BadRequestError as e:
        assert e.status_code == 400, e
        assert e.body["message"] == "`messages` must not be empty", e.body
        assert e.body["type"] == "invalid_request_error", e.body
        assert e.response.headers.get("x-switchyard-node"), e.response.headers
        assert e.response.headers.get("x-request-id"), e.response.headers
        print("ok upstream_error", json.dumps(e.body))
        return
    raise AssertionError("an empty messages list was accepted")


def wrong_key(args):
    try:
        client(args, key="sk-wrong").chat.completions.create(
            model=args.model, messages=[{"role": "user", "content": "hi"}]
        )
    except openai.AuthenticationError as e:
        assert e.status_code == 401
        print("ok wrong_key", e.status_code)
        return
    raise AssertionError("a wrong key was accepted")


def rate_limited(args):
    limited = client(args, key=args.limited_key)
    messages = [{"role": "user", "content": "hi"}]
    limited.chat.completions.create(model=args.model, messages=messages, max_tokens=1)
    try:
        limited.chat.completions.create(model=args.model, messages=messages, max_tokens=1)
    except openai.RateLimitError as e:
        assert e.status_code == 429
        assert int(e.response.headers["retry-after"]) >= 1, e.response.headers
        print("ok rate_limited retry_after", e.response.headers["retry-after"])
        return
    raise AssertionError("a tenant over its calls_per_s was not limited")


def toy_stats(args):
    with urllib.request.urlopen(args.toy + "/stats", timeout=5) as r:
        return json.load(r)


def cancel(args):
    before = toy_stats(args)["cancelled"]
    events = client(args).chat.completions.create(
        model=args.model,
        messages=[{"role": "user", "content": "a long answer"}],
        max_tokens=200,
        stream=True,
    )
    seen = 0
    for event in events:
        if event.choices and event.choices[0].delta.content:
            seen += 1
            if seen == 3:
                break
    events.close()
    deadline = time.monotonic() + 5
    while toy_stats(args)["cancelled"] <= before:
        assert time.monotonic() < deadline, toy_stats(args)
        time.sleep(0.05)
    print("ok cancel after", seen, "chunks")


CHECKS = [
    chat,
    stream,
    embeddings,
    models,
    upstream_error,
    wrong_key,
    rate_limited,
    cancel,
]

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--limited-key", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--alias", required=True)
    parser.add_argument("--toy", required=True, help="the toy model's base URL")
    args = parser.parse_args()
    for check in CHECKS:
        check(args)
