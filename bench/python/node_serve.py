"""A Python node for `make bench`'s `python` section: serves `py_echo`
(returns its payload: the cost of the node itself, not of the function)
through switchyard_fleet.Node until SIGTERM, then drains.

    node_serve.py GATEWAY CA TOKEN MAX_CONCURRENT
"""

import sys

import switchyard_fleet as sf


def main() -> None:
    gateway, ca, token, max_concurrent = sys.argv[1:5]
    node = sf.Node(gateway, ca=ca, token=token, node_id="python-node", shutdown_grace_s=5)

    @node.register(max_concurrent=int(max_concurrent))
    def py_echo(data: bytes) -> bytes:
        return data

    node.serve()


if __name__ == "__main__":
    main()
