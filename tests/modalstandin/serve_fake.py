"""Run the fake Modal control plane until SIGTERM/SIGINT.
Prints one line: READY grpc=http://127.0.0.1:P1 control=http://127.0.0.1:P2 (JSON control API: see fake_modal._Control).
Point the real client at it with MODAL_SERVER_URL=<grpc url> and any MODAL_TOKEN_ID / MODAL_TOKEN_SECRET."""
import argparse
import os
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fake_modal import FakeModal, FakeServer

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("--app", default="speedq", help="app the functions are deployed in")
ap.add_argument("--function", action="append", dest="functions", metavar="NAME",
                help="deployed function (repeatable; default: run_speedrun, test_10_steps, prepare_data, resolve_ref)")
opts = ap.parse_args()
stop = threading.Event()
for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda *_: stop.set())
functions = opts.functions or ["run_speedrun", "test_10_steps", "prepare_data", "resolve_ref"]
server = FakeServer(FakeModal(opts.app, functions))
print(f"READY grpc={server.grpc_url} control={server.control_url}", flush=True)
while not stop.wait(0.5):
    pass
server.stop()
