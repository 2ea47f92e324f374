"""A node serving ``train_model``. Run it on each machine (here: twice,
with different node ids and costs) and the gateway balances the calls
over them:

    python train_model.py gpu-node-1 2.5 &
    python train_model.py gpu-node-2 0.8 &
    python call_train_model.py

The "training" is a least-squares line fit by gradient descent, in plain
Python: real work whose time grows with ``epochs``.
"""

import sys

import switchyard_fleet as sf
from _fleet import CA, GATEWAY, token_options

node_id = sys.argv[1] if len(sys.argv) > 1 else None
cost = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
node = sf.Node(GATEWAY, ca=CA, node_id=node_id, cost_per_hour=cost, **token_options())


@node.register(load_balancing=True, codec="json", max_concurrent=2)
def train_model(data):
    xs, ys = data["x"], data["y"]
    w = b = 0.0
    for epoch in range(data.get("epochs", 200)):
        dw = sum((w * x + b - y) * x for x, y in zip(xs, ys)) * 2 / len(xs)
        db = sum(w * x + b - y for x, y in zip(xs, ys)) * 2 / len(xs)
        w, b = w - 0.01 * dw, b - 0.01 * db
        if epoch % 50 == 0:
            sf.log(f"epoch {epoch}: w={w:.3f} b={b:.3f}")  # a job's log
    return {"w": round(w, 3), "b": round(b, 3), "node": node.node_id}


if __name__ == "__main__":
    node.serve()  # until SIGTERM or Ctrl-C, then drains
