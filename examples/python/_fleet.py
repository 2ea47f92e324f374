"""Where the examples find the gateway: SWITCHYARD_GATEWAY (its QUIC
address, default 127.0.0.1:4433), SWITCHYARD_CA (its CA file, default the
gateway's default data folder's ca.pem) and, for nodes, SWITCHYARD_AGENT_TOKEN
or the gateway's generated agent-token file beside the CA."""

import os
from pathlib import Path

DATA = Path.home() / ".local/share/switchyard"
GATEWAY = os.environ.get("SWITCHYARD_GATEWAY", "127.0.0.1:4433")
CA = os.environ.get("SWITCHYARD_CA", str(DATA / "ca.pem"))


def token_options() -> dict:
    """The agent token as ``Node``'s keyword arguments."""
    token = os.environ.get("SWITCHYARD_AGENT_TOKEN")
    if token:
        return {"token": token}
    return {"token_file": str(Path(CA).parent / "agent-token")}
