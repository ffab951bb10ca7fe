"""Small self-written fake of Modal's control plane, for offline tests of code using the real client (modal==1.6.4).
Copied from /work/shared/modal-standin/ so the suite stands on its own; speedq's additions: faults (class Faults:
API blips of any gRPC status on FunctionGetOutputs, a FunctionMap whose answer never comes or whose connection drops
after the call was created, a cancel that takes a while to take effect) and FunctionMap deduplicated by the client's
x-idempotency-key (its retries of one spawn create one call, as the real server is assumed to do).

gRPC served: FunctionGet + FunctionMap (Function.from_name().spawn), FunctionGetOutputs (FunctionCall.get, long-polls
up to the client's timeout), FunctionCallCancel, VolumeGetOrCreate (Volume.from_name), VolumeGetFile2 (read_file; the
blocks come from FakeServer's HTTP server), VolumeListFiles/VolumeListFiles2 (listdir, v1/v2 volumes). Any other RPC
answers UNIMPLEMENTED (patch_mock_servicer). ModalClientBase and patch_mock_servicer are private parts of the package.
"""
import asyncio, base64, json, pickle, socket, threading, time, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dataclasses
import grpclib.events, grpclib.server
from google.protobuf.empty_pb2 import Empty
from grpclib import GRPCError, Status
from modal._utils.grpc_testing import patch_mock_servicer
from modal_proto import api_grpc, api_pb2

BLOCK_SIZE = 8 * 1024 * 1024  # block size the 1.6.4 client assumes (modal._utils.blob_utils.BLOCK_SIZE)
GR = api_pb2.GenericResult
STATUS = {"success": GR.GENERIC_STATUS_SUCCESS, "failure": GR.GENERIC_STATUS_FAILURE,
          "timeout": GR.GENERIC_STATUS_TIMEOUT, "terminated": GR.GENERIC_STATUS_TERMINATED,
          "internal": GR.GENERIC_STATUS_INTERNAL_FAILURE}
STATES = ("running", "expired", *STATUS)  # "expired": no outputs any more -> client raises OutputExpiredError
DEFAULT_MSG = {"failure": "remote failure", "timeout": "Function call timed out (fake)",
               "terminated": "Function call was cancelled (fake)", "internal": "Internal failure, preemption (fake)"}
FILE, DIR = api_pb2.FileEntry.FileType.FILE, api_pb2.FileEntry.FileType.DIRECTORY
UNSPECIFIED = api_pb2.VOLUME_FS_VERSION_UNSPECIFIED  # what from_name() sends unless version= is given


@dataclasses.dataclass
class Faults:
    """What goes wrong, and until when (time.monotonic()). Set through FakeModal.faults or POST /faults."""
    outputs_status: str | None = None  # a grpclib Status name answered by FunctionGetOutputs ...
    outputs_until: float = 0.0         # ... until this moment
    map_fault: str | None = None       # "hang": never answer; "drop": reset the connection; after the call exists
    map_count: int = 0                 # how many FunctionMap requests the fault hits (client retries included)
    cancel_delay_s: float = 0.0        # a cancelled call keeps running this long before it is terminated
    dedupe: bool = True                # False: a retried FunctionMap (same idempotency key) makes a new call

    def blip(self, status, seconds):  # a grpclib Status name, or "RESET" (connection reset)
        self.outputs_status = status if status == "RESET" else Status[status].name
        self.outputs_until = time.monotonic() + seconds


def _norm(path):
    return "/".join(p for p in path.split("/") if p not in ("", "."))


@patch_mock_servicer
class FakeModal(api_grpc.ModalClientBase):
    def __init__(self, app="nanochat-speedrun", functions=("run_speedrun", "test_10_steps")):
        self.lock = threading.Lock()  # the HTTP control thread and the gRPC loop thread share the state below
        self.functions = {(app, f): f"fu-{i}" for i, f in enumerate(functions, 1)}  # (app, name) -> function id
        self.calls = {}    # fc id -> {id, function, args, kwargs, state, value, cancelled, terminate_containers}
        self.volumes = {}  # name -> {"id", "version", "files": {path: (bytes, mtime)}}
        self.rpc_log = []  # names of all RPCs received, implemented or not
        self.bound = {}  # bound variant id -> (function name, FunctionOptions)
        self.block_url = "http://127.0.0.1:1/block"  # FakeServer points this at its HTTP server
        self.faults = Faults()
        self.by_key = {}  # x-idempotency-key of a FunctionMap -> its call id
        self.hanging = []  # events that release FunctionMap handlers left hanging (so the server can stop)

    def reset(self):  # a clean account between tests that share one server
        with self.lock:
            self.calls.clear(); self.volumes.clear(); self.rpc_log.clear(); self.by_key.clear()
            self.faults = Faults()
        for event in self.hanging:
            event.set()

    def live_calls(self):  # calls not ended: what a GPU bill counts
        self._apply_cancels()
        with self.lock:
            return [c["id"] for c in self.calls.values() if c["state"] == "running"]

    def _apply_cancels(self):  # a slow cancel takes effect once its delay has passed
        with self.lock:
            for call in self.calls.values():
                due = call.get("terminate_at")
                if due is not None and time.monotonic() >= due and call["state"] == "running":
                    call["state"] = "terminated"

    async def log_rpc(self, event):  # grpclib RecvRequest listener
        self.rpc_log.append(event.method_name.rsplit("/", 1)[-1])

    def set_outcome(self, fc_id, state, value=None):  # KeyError for an unknown call, ValueError for a bad state
        if state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}")
        with self.lock:
            self.calls[fc_id].update(state=state, value=value)
            return dict(self.calls[fc_id])

    def put_file(self, volume, path, data, version=UNSPECIFIED):  # creates the volume if needed
        with self.lock:
            vol = self._volume(volume, create=True, version=version)
            vol["files"][_norm(path)] = (data.encode() if isinstance(data, str) else bytes(data), int(time.time()))

    def _volume(self, name, create=False, version=UNSPECIFIED):
        if name not in self.volumes and create:
            self.volumes[name] = {"id": f"vo-{len(self.volumes) + 1}", "version": version, "files": {}}
        return self.volumes.get(name)

    def _files(self, volume_id):
        with self.lock:
            vol = next((v for v in self.volumes.values() if v["id"] == volume_id), None)
            if vol is None:
                raise GRPCError(Status.NOT_FOUND, f"Volume {volume_id} not found")
            return dict(vol["files"])

    async def FunctionGet(self, stream):
        req = await stream.recv_message()
        fid = self.functions.get((req.app_name, req.object_tag))
        if not fid:
            raise GRPCError(Status.NOT_FOUND, f"Function {req.object_tag!r} not found in app {req.app_name!r}")
        meta = api_pb2.FunctionHandleMetadata(function_name=req.object_tag,
                                              function_type=api_pb2.Function.FUNCTION_TYPE_FUNCTION)
        ranked = api_pb2.FunctionData.RankedFunction(function=api_pb2.Function(function_name=req.object_tag))
        await stream.send_message(api_pb2.FunctionGetResponse(  # 1.6.4 needs `function` set, not only the metadata
            function_id=fid, handle_metadata=meta, function=api_pb2.FunctionData(ranked_functions=[ranked])))

    async def FunctionBindParams(self, stream):  # Function.with_options() binds a variant first
        req = await stream.recv_message()
        name = next((n for (_, n), fid in self.functions.items() if fid == req.function_id), None)
        if name is None:
            raise GRPCError(Status.NOT_FOUND, f"Function {req.function_id} not found")
        with self.lock:
            bound = f"{req.function_id}-v{len(self.bound) + 1}"
            self.bound[bound] = (name, req.function_options)
        meta = api_pb2.FunctionHandleMetadata(function_name=name, function_type=api_pb2.Function.FUNCTION_TYPE_FUNCTION)
        await stream.send_message(api_pb2.FunctionBindParamsResponse(bound_function_id=bound, handle_metadata=meta))

    async def FunctionMap(self, stream):
        req = await stream.recv_message()
        name = next((n for (_, n), fid in self.functions.items() if fid == req.function_id), None)
        if name is None and req.function_id in self.bound:  # a with_options() variant
            name = self.bound[req.function_id][0]
        name = name or req.function_id
        item = req.pipelined_inputs[0]  # spawn sends one input; .map() and blob-uploaded (>2 MiB) args unsupported
        args, kwargs = pickle.loads(item.input.args)
        with self.lock:
            key = stream.metadata.get("x-idempotency-key") if self.faults.dedupe else None
            fc_id = self.by_key.get(key) if key else None
            if fc_id is None:
                fc_id = self._new_call(req, name, args, kwargs)
                if key:
                    self.by_key[key] = fc_id
            fault = self.faults.map_fault if self.faults.map_count > 0 else None
            if fault:
                self.faults.map_count -= 1
        if fault == "hang":  # the call exists; its answer never comes
            release = asyncio.Event()
            self.hanging.append(release)
            await release.wait()
            raise GRPCError(Status.UNAVAILABLE, "stand-in shutting down")
        if fault == "drop":  # the call exists; the connection is reset before the answer
            stream._stream._transport.abort()
            return
        done = api_pb2.FunctionPutInputsResponseItem(idx=item.idx, input_id=f"in-{fc_id}", input_jwt=f"jwt-{fc_id}")
        await stream.send_message(api_pb2.FunctionMapResponse(
            function_call_id=fc_id, function_call_jwt=f"jwt-{fc_id}", pipelined_inputs=[done]))

    def _new_call(self, req, name, args, kwargs):  # under self.lock
        fc_id = f"fc-{len(self.calls) + 1:04d}"
        opts = self.bound.get(req.function_id, (None, None))[1]  # the variant's gpu and timeout
        self.calls[fc_id] = {"id": fc_id, "function": name, "args": list(args), "kwargs": kwargs,
                             "bound_options": None if opts is None else {
                                 "gpu": f"{opts.resources.gpu_config.gpu_type}:{opts.resources.gpu_config.count}",
                                 "timeout_secs": opts.timeout_secs},
                             "state": "running", "value": None, "cancelled": False, "terminate_containers": False}
        return fc_id

    async def FunctionGetOutputs(self, stream):
        req = await stream.recv_message()
        with self.lock:
            blip = self.faults.outputs_status if time.monotonic() < self.faults.outputs_until else None
        if blip == "RESET":  # the connection drops mid-poll
            stream._stream._transport.abort()
            return
        if blip:
            raise GRPCError(Status[blip], f"stand-in blip: {blip}")
        deadline = time.monotonic() + max(0.0, req.timeout)
        while True:
            self._apply_cancels()  # like the real server, answer once the call has finished or the client's timeout has passed
            with self.lock:
                call = dict(self.calls.get(req.function_call_id) or {"state": "expired"})
            if call["state"] != "running" or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        if call["state"] in ("running", "expired"):  # no outputs + 0 unfinished inputs -> OutputExpiredError
            unfinished = int(call["state"] == "running")
            return await stream.send_message(api_pb2.FunctionGetOutputsResponse(num_unfinished_inputs=unfinished))
        state, value = call["state"], call["value"]
        msg = str(value) if value is not None else DEFAULT_MSG.get(state)
        if state == "success":
            result = GR(status=STATUS[state], data=pickle.dumps(value))
        elif state == "failure":  # re-raised by the client: a RuntimeError, or the exception object set in-process
            exc = value if isinstance(value, BaseException) else RuntimeError(msg)
            result = GR(status=STATUS[state], data=pickle.dumps(exc), exception=repr(exc), traceback="(fake)")
        else:
            result = GR(status=STATUS[state], exception=msg)
        item = api_pb2.FunctionGetOutputsItem(idx=0, input_id=f"in-{call['id']}", result=result,
                                              data_format=api_pb2.DATA_FORMAT_PICKLE)
        await stream.send_message(api_pb2.FunctionGetOutputsResponse(outputs=[item], num_unfinished_inputs=0))

    async def FunctionCallCancel(self, stream):
        req = await stream.recv_message()
        with self.lock:
            call = self.calls.get(req.function_call_id)
            if call:
                call.update(cancelled=True, terminate_containers=req.terminate_containers)
                if call["state"] == "running":
                    call["terminate_at"] = time.monotonic() + self.faults.cancel_delay_s
        self._apply_cancels()
        await stream.send_message(Empty())

    async def VolumeGetOrCreate(self, stream):
        req = await stream.recv_message()
        with self.lock:  # a new volume gets the version the client asked for (UNSPECIFIED by default = v1 to it)
            vol = self._volume(req.deployment_name, version=req.version,
                               create=req.object_creation_type == api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING)
        if vol is None:
            raise GRPCError(Status.NOT_FOUND, f"Volume {req.deployment_name!r} not found")
        await stream.send_message(api_pb2.VolumeGetOrCreateResponse(volume_id=vol["id"], version=vol["version"],
            metadata=api_pb2.VolumeMetadata(version=vol["version"], name=req.deployment_name)))

    async def VolumeGetFile2(self, stream):
        req = await stream.recv_message()
        path = _norm(req.path)
        entry = self._files(req.volume_id).get(path)
        if entry is None:  # the client turns NOT_FOUND into FileNotFoundError
            raise GRPCError(Status.NOT_FOUND, f"No such file: {req.path}")
        size = len(entry[0])
        start = min(req.start, size)
        end = min(size, start + req.len) if req.len else size
        urls, pos = [], start
        while pos < end:  # one URL per BLOCK_SIZE-aligned block, as the client expects
            stop = min(end, (pos // BLOCK_SIZE + 1) * BLOCK_SIZE)
            query = urllib.parse.urlencode({"vol": req.volume_id, "path": path, "start": pos, "end": stop})
            urls.append(f"{self.block_url}?{query}")
            pos = stop
        await stream.send_message(api_pb2.VolumeGetFile2Response(get_urls=urls, size=size, start=start,
                                                                 len=end - start))

    async def VolumeListFiles(self, stream):
        await self._list_files(stream, api_pb2.VolumeListFilesResponse)

    async def VolumeListFiles2(self, stream):
        await self._list_files(stream, api_pb2.VolumeListFiles2Response)

    async def _list_files(self, stream, response_type):
        req = await stream.recv_message()
        path, files = _norm(req.path), self._files(req.volume_id)
        if path in files:  # a file's path lists just that file
            found = {path: (FILE, len(files[path][0]), files[path][1])}
        else:
            prefix, found = (path + "/" if path else ""), {}
            for p, (data, mtime) in files.items():
                if p.startswith(prefix):
                    parts = p[len(prefix):].split("/")
                    for i in range(1, len(parts) if req.recursive else min(2, len(parts))):  # directories
                        found.setdefault(prefix + "/".join(parts[:i]), (DIR, 0, mtime))
                    if req.recursive or len(parts) == 1:
                        found[p] = (FILE, len(data), mtime)
            if path and not found:
                raise GRPCError(Status.NOT_FOUND, f"No such file or directory: {req.path}")
        entries = [api_pb2.FileEntry(path=p, type=t, size=s, mtime=m) for p, (t, s, m) in sorted(found.items())]
        await stream.send_message(response_type(entries=entries))


class _Control(BaseHTTPRequestHandler):
    """JSON control API: GET /calls, GET /calls/<id>, POST /calls/<id> {"state", "value"}, GET /rpc_log,
    POST /volumes/<name>/files {"path", "content" or "content_b64"}; GET /block?... serves volume blocks."""
    svc: FakeModal

    def _send(self, code, obj=None, raw=None):
        body = raw if raw is not None else json.dumps(obj, default=repr).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        parts, svc = url.path.strip("/").split("/"), self.svc
        with svc.lock:
            if parts == ["calls"]:
                return self._send(200, [dict(c) for c in svc.calls.values()])
            if parts[0] == "calls" and len(parts) == 2 and parts[1] in svc.calls:
                return self._send(200, svc.calls[parts[1]])
            if parts == ["rpc_log"]:
                return self._send(200, svc.rpc_log)
        if parts == ["live"]:
            return self._send(200, svc.live_calls())
        if parts == ["block"]:
            q = dict(urllib.parse.parse_qsl(url.query))
            try:
                data = svc._files(q["vol"])[q["path"]][0][int(q["start"]):int(q["end"])]
                return self._send(200, raw=data)
            except (KeyError, ValueError, GRPCError):
                pass
        self._send(404, {"error": f"not found: {url.path}"})

    def do_POST(self):
        parts = urllib.parse.urlparse(self.path).path.strip("/").split("/")
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if parts[0] == "calls" and len(parts) == 2 and parts[1] in self.svc.calls:
                return self._send(200, self.svc.set_outcome(parts[1], body["state"], body.get("value")))
            if parts == ["faults"]:  # {"outputs_status", "seconds"} and/or Faults fields
                with self.svc.lock:
                    if "outputs_status" in body:
                        self.svc.faults.blip(body.pop("outputs_status"), float(body.pop("seconds", 2)))
                    for name, value in body.items():
                        if name not in Faults.__dataclass_fields__:
                            raise ValueError(f"unknown fault {name!r}")
                        setattr(self.svc.faults, name, value)
                    return self._send(200, dataclasses.asdict(self.svc.faults))
            if parts[0] == "volumes" and parts[2:] == ["files"]:
                data = body["content"] if "content_b64" not in body else base64.b64decode(body["content_b64"], True)
                self.svc.put_file(parts[1], body["path"], data)
                return self._send(200, {"volume": parts[1], "path": _norm(body["path"]), "size": len(data)})
        except KeyError as e:
            return self._send(400, {"error": f"missing field {e}"})
        except ValueError as e:  # bad JSON, bad state, bad base64
            return self._send(400, {"error": str(e)})
        self._send(404, {"error": f"not found: {self.path}"})

    def log_message(self, *args):  # keep stderr quiet
        pass


class FakeServer:
    """FakeModal over gRPC plus the HTTP control server, each on a free port of `host`, served by daemon threads."""

    def __init__(self, svc=None, host="127.0.0.1"):
        self.svc = svc or FakeModal()
        self.http = ThreadingHTTPServer((host, 0), type("Control", (_Control,), {"svc": self.svc}))
        self.control_url = f"http://{host}:{self.http.server_address[1]}"
        self.svc.block_url = f"{self.control_url}/block"
        threading.Thread(target=self.http.serve_forever, args=(0.05,), daemon=True).start()
        sock = socket.create_server((host, 0))
        self.grpc_url = f"http://{host}:{sock.getsockname()[1]}"
        self.loop, self.grpc = asyncio.new_event_loop(), None

        async def serve():
            self.grpc = grpclib.server.Server([self.svc])
            grpclib.events.listen(self.grpc, grpclib.events.RecvRequest, self.svc.log_rpc)
            await self.grpc.start(sock=sock)

        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(serve(), self.loop).result(10)

    def stop(self):
        self.http.shutdown()
        self.http.server_close()

        async def close():
            for event in self.svc.hanging:
                event.set()
            self.grpc.close()
            await asyncio.wait([asyncio.ensure_future(self.grpc.wait_closed())], timeout=2)

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
