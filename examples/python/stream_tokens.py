"""A generator served as a streamed service: each item reaches the caller
as a chunk as soon as it is yielded; dropping the stream stops the
generator on the node.

    python stream_tokens.py          # serves, then calls itself
"""

import threading
import time

import switchyard_fleet as sf
from _fleet import CA, GATEWAY, token_options

node = sf.Node(GATEWAY, ca=CA, node_id="py-stream-example", **token_options())


@node.register(max_concurrent=4)
def generate(prompt):
    for word in prompt.decode().split():
        time.sleep(0.05)  # one "token" every 50 ms
        yield word.upper() + " "


if __name__ == "__main__":
    threading.Thread(target=node.serve, daemon=True).start()
    with sf.Client([GATEWAY], CA) as client:
        for _ in range(100):  # until the node registered
            try:
                client.call("generate", b"warm", timeout=1)
                break
            except sf.SwitchyardError:
                time.sleep(0.1)
        started = time.monotonic()
        with client.stream("generate", b"the quick brown fox jumps") as chunks:
            for chunk in chunks:
                print(f"{(time.monotonic() - started) * 1000:5.0f} ms  {chunk.decode()}")
    node.stop()
