"""Calls ``train_model`` (served by train_model.py on two nodes) under each
load-balancing policy and prints which node served each call."""

from collections import Counter

import switchyard_fleet as sf
from _fleet import CA, GATEWAY

client = sf.Client([GATEWAY], CA)
data = {"x": [0, 1, 2, 3, 4], "y": [1, 3, 5, 7, 9], "epochs": 300}

for strategy in ["round_robin", "resource_aware", "latency_based", "cost_aware", "smart_adaptive"]:

    @client.remote(function_name="train_model", codec="json", load_balancing={"strategy": strategy})
    def train_model(data):
        """Runs on the fleet; this body never runs."""

    served = Counter(train_model(data)["node"] for _ in range(8))
    print(f"{strategy:15} {dict(sorted(served.items()))}")

result = client.call("train_model", b'{"x": [0, 1], "y": [1, 3], "epochs": 300}', explain=True)
print("why:", result.explain)
