"""The examples in examples/python run against the real gateway: two
``train_model`` nodes, the caller under each policy, a job followed, a
streamed generator."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "python"
STRATEGIES = ["round_robin", "resource_aware", "latency_based", "cost_aware", "smart_adaptive"]


def _env(gateway, ca, agent_token):
    return {
        **os.environ,
        "SWITCHYARD_GATEWAY": gateway,
        "SWITCHYARD_CA": ca,
        "SWITCHYARD_AGENT_TOKEN": agent_token,
    }


def _run(script, env, *args, timeout=60):
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, f"{script}: {out.stdout}\n{out.stderr}"
    return out.stdout


def test_the_examples_run(client, gateway, ca, agent_token):
    from test_node import _ids, _wait

    env = _env(gateway, ca, agent_token)
    nodes = [
        subprocess.Popen(
            [sys.executable, str(EXAMPLES / "train_model.py"), node_id, cost],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for node_id, cost in [("gpu-node-1", "2.5"), ("gpu-node-2", "0.8")]
    ]
    try:
        _wait(lambda: {"gpu-node-1", "gpu-node-2"} <= _ids(client), "the example nodes")
        out = _run("call_train_model.py", env)
        lines = {line.split()[0]: line for line in out.splitlines() if line.split()}
        for strategy in STRATEGIES:
            assert strategy in lines, out
        # Round-robin alternates; the cheaper node wins cost_aware.
        assert "'gpu-node-1': 4" in lines["round_robin"] and "'gpu-node-2': 4" in lines["round_robin"], out
        assert "gpu-node-2" in lines["cost_aware"] and "gpu-node-1" not in lines["cost_aware"], out
        assert "why:" in out
        out = _run("job_follow.py", env)
        assert "epoch 0: w=" in out and "state succeeded" in out and "'node': 'gpu-node-" in out, out
    finally:
        for process in nodes:
            process.send_signal(signal.SIGTERM)
        for process in nodes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                pytest.fail("an example node did not drain within 30 s")
        _wait(lambda: not {"gpu-node-1", "gpu-node-2"} & _ids(client), "the example nodes to leave")
    assert [p.returncode for p in nodes] == [0, 0]
    out = _run("stream_tokens.py", env)
    words = [line.split()[-1] for line in out.splitlines()]
    assert words == ["THE", "QUICK", "BROWN", "FOX", "JUMPS"], out
