"""A durable job from Python: submitted to ``train_model`` (serve it with
train_model.py), its log followed as the node writes it (``sf.log`` in the
function), then its result read. Needs the gateway's jobs (`[jobs]`)."""

import json

import switchyard_fleet as sf
from _fleet import CA, GATEWAY

with sf.Client([GATEWAY], CA) as client:
    payload = {"x": [0, 1, 2, 3], "y": [2, 4, 6, 8], "epochs": 400}
    job = client.submit_job("train_model", json.dumps(payload).encode(), labels={"team": "ml"})
    print("submitted", job["id"])
    for entry in client.follow_log(job["id"]):
        print(f"  {entry['stream']}: {entry['line']}")
    print("state", client.job(job["id"])["state"])
    print("result", json.loads(client.job_result(job["id"])))
