"""Child kernels: a cell's code runs in an env's own kernel, its output shows in the parent
cell as if the code had run there.

One long-lived child per env per parent kernel (`pool_for(shell).get(...)`), started by
jupyter_client from a concrete argv (the env's python; no kernelspec lookup) and driven from
the parent's main thread through the sockets of a blocking client. `SubKernel.run_cell`
relays the child's iopub messages into the parent cell in the order they come, through the
parent kernel's own session and iopub socket; widget comms are relayed both ways.

For the caller (the magics):
- Every error here renders itself in IPython (`_render_traceback_`). Let it propagate out of
  the magic: the cell fails and shows only the child's traceback (`ChildExecutionError`,
  named after the child's exception, `str()` its evalue), or a one-line nbenv message.
- A parent interrupt interrupts the child; `run_cell` then raises `ChildInterrupted` (a
  KeyboardInterrupt carrying the child's traceback). A second interrupt while the child
  ignores the first kills it.
- Values cross as pickles (protocol 5: Python 3.8 and later read it) through files in a
  private temp dir, never through the messages; failures name the variable.
- Children exit with the parent: shut down at parent shutdown and at exit, and each child
  watches its parent's pid (ipykernel 7 does through JPY_PARENT_PID; older ones only notice a
  parent of pid 1, so a watcher thread is started in every child too).
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import getpass
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import zmq
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import KernelManager
from jupyter_core.paths import jupyter_runtime_dir

from nbenv.errors import (
    ChildCrashedError,
    ChildExecutionError,
    ChildInterrupted,
    SubKernelError,
    SubKernelStartError,
    VariableTransferError,
)

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

__all__ = ["PICKLE_PROTOCOL", "SubKernel", "SubKernelPool", "pool_for"]

PICKLE_PROTOCOL = 5  # read by every Python a child may run (3.8+) and by the parent
START_TIMEOUT = 60.0  # seconds; a first start may compile bytecode
_POLL_MS = 200  # while waiting, how often the parent checks that the child still lives
_SHUTDOWN_GRACE = 2.0  # seconds a child gets to exit on its own before it is killed
_TCP_WARNING = "Kernel is running over TCP without encryption"  # ipykernel 7, every start
_OUTPUTS = frozenset({"stream", "display_data", "update_display_data", "clear_output"})
_COMMS = frozenset({"comm_open", "comm_msg", "comm_close"})
_NO_INPUTS: Mapping[str, object] = MappingProxyType({})

# jupyter_client logs through traitlets, which would print into the parent's cell; what
# matters reaches the user as an error, so its messages go to a logger of ours, silent
# unless an application configures it.
_log = logging.getLogger(__name__)
_log.addHandler(logging.NullHandler())

# Child-side code. It runs through `exec` in a fresh dict so that the user's namespace gains
# no names, and must stay valid Python 3.8.
# A killed parent cannot clean up after its child: the child removes its own files.
_WATCH_PARENT = """
import os, shutil, threading, time
def watch():
    while os.getppid() == ppid:
        time.sleep(1.0)
    for path in leftovers:
        try:
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        except OSError:
            pass
    os._exit(1)
threading.Thread(target=watch, name="nbenv-parent-watch", daemon=True).start()
"""
# Only that watcher acts on the parent's death: ipykernel's own poller would exit first,
# leaving the files. Parent handle 1 (init) turns the poller off on POSIX; 0 would too, but
# makes ipykernel print its `ipython kernel` connection banner into the child's log.
_NO_PARENT_POLLER = () if os.name == "nt" else ("--IPKernelApp.parent_handle=1",)

_SET_INPUTS = """
import pickle
with open(args["path"], "rb") as f:
    blobs = pickle.load(f)
values, errors = {}, {}
for name, blob in blobs.items():
    try:
        values[name] = pickle.loads(blob)
    except Exception as e:
        errors[name] = "the env's kernel cannot load it (%s: %s)" % (type(e).__name__, e)
if errors:
    with open(args["result"], "wb") as f:
        pickle.dump(errors, f, protocol=2)
else:
    ns.update(values)
"""

_GET_OUTPUTS = """
import pickle
blobs, errors = {}, {}
for name in args["names"]:
    if name not in ns:
        errors[name] = "it is not defined in the env's kernel"
        continue
    try:
        blobs[name] = pickle.dumps(ns[name], protocol=args["protocol"])
    except Exception as e:
        errors[name] = "it cannot be pickled (%s: %s)" % (type(e).__name__, e)
with open(args["path"], "wb") as f:
    pickle.dump((blobs, errors), f, protocol=args["protocol"])
"""

_RETARGET = """
import importlib, os, site, sys
olds = {args["old"], os.path.realpath(args["old"])}
new = args["new"]
def moved(p):
    for o in olds:
        if p == o or p.startswith(o + os.sep):
            return new + p[len(o):]
    return p
added = [moved(p) for p in sys.path if moved(p) != p]
sys.path[:] = [moved(p) for p in sys.path]
sys.prefix, sys.exec_prefix = moved(sys.prefix), moved(sys.exec_prefix)
site.PREFIXES[:] = [moved(p) for p in site.PREFIXES]
sys.executable = args["python"]
if os.environ.get("VIRTUAL_ENV") in olds:
    os.environ["VIRTUAL_ENV"] = new
os.environ["PATH"] = os.pathsep.join(moved(p) for p in os.environ.get("PATH", "").split(os.pathsep))
known = {os.path.normcase(p) for p in sys.path}
for sitedir in added:
    old_dir = sitedir.replace(new, args["old"], 1)
    try:
        pths = sorted(n for n in os.listdir(sitedir) if n.endswith(".pth"))
    except OSError:
        continue
    for name in pths:
        if not os.path.exists(os.path.join(old_dir, name)):
            site.addpackage(sitedir, name, known)
importlib.invalidate_caches()
"""


class _Manager(KernelManager):
    """A KernelManager for one concrete spec: no kernelspec directory is searched."""

    def __init__(self, spec: KernelSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._nbenv_spec = spec

    @property
    def kernel_spec(self) -> KernelSpec:
        return self._nbenv_spec


class _ParentOutput:
    """The parent cell: the parent kernel's iopub when there is one, else a terminal; with
    no shell at all (nbenv's own calls outside a cell), nowhere."""

    def __init__(self, shell: InteractiveShell | None) -> None:
        self.shell = shell
        self.kernel: Any = getattr(shell, "kernel", None)
        self.publisher: Any = getattr(shell, "display_pub", None)
        publisher = self.publisher
        self._session: Any = getattr(publisher, "session", None)
        self._socket: Any = getattr(publisher, "pub_socket", None)

    def parent_header(self) -> dict[str, Any]:
        publisher = getattr(self.shell, "display_pub", None)
        return dict(getattr(publisher, "parent_header", None) or {})

    def flush(self) -> None:
        # what the parent printed before the child's output must show before it
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()

    def send(self, msg: dict[str, Any], msg_type: str, content: dict[str, Any],
             parent: dict[str, Any]) -> None:  # fmt: skip
        if self.shell is None:
            return
        if self._session is not None and self._socket is not None:
            buffers = [memoryview(b).tobytes() for b in msg.get("buffers") or []]
            self._session.send(self._socket, msg_type, content, parent=parent, buffers=buffers,
                               metadata=msg.get("metadata") or {})  # fmt: skip
        elif msg_type == "stream":
            stream = sys.stderr if content.get("name") == "stderr" else sys.stdout
            stream.write(content.get("text", ""))
            stream.flush()
        elif msg_type in ("display_data", "update_display_data"):
            self.publisher.publish(
                data=content.get("data", {}),
                metadata=content.get("metadata"),
                transient=content.get("transient"),
                update=msg_type == "update_display_data",
            )
        elif msg_type == "clear_output":
            self.publisher.clear_output(wait=bool(content.get("wait")))
        # comms need a frontend: without a kernel there is none

    def stdin_allowed(self) -> bool:
        # ipykernel records whether the current request's frontend answers input requests;
        # the child is told the same, so input() there fails exactly as it would here
        if self.shell is None:
            return False
        return self.kernel is None or bool(getattr(self.kernel, "_allow_stdin", True))

    def ask(self, prompt: str, password: bool) -> str:
        if self.kernel is not None:
            answer = self.kernel.getpass(prompt) if password else self.kernel.raw_input(prompt)
            return str(answer)
        return getpass.getpass(prompt) if password else builtins.input(prompt)


class SubKernel:
    """The kernel of one env, for one parent kernel: started on first use, restarted on the
    next use after it died. Use it from the parent's main thread only."""

    def __init__(
        self,
        env_id: str,
        python: Path,
        env_dir: Path,
        *,
        pool: SubKernelPool | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.env_id = env_id
        self.python = Path(python)
        self.env_dir = Path(env_dir)
        self.start_timeout = start_timeout
        self._pool = pool
        self._comms: dict[str, SubKernel] = pool._comms if pool is not None else {}
        self._km: _Manager | None = None
        self._kc: BlockingKernelClient | None = None
        self._poller: zmq.Poller | None = None
        self._tmp = Path(tempfile.mkdtemp(prefix="nbenv-child-"))
        self._log = self._tmp / "kernel.log"
        self._log_start = 0
        self._lost: str | None = None  # why the previous child is gone, told on next use
        self._origins: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._busy = False
        self._child_count = 1  # the number the child gives its next cell

    # -- life cycle ------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        process = getattr(self._km.provisioner, "process", None) if self._km else None
        return int(process.pid) if process is not None else None

    def is_alive(self) -> bool:
        return self._km is not None and self._exit_code() is None

    def start(self) -> None:
        """Start the child unless it runs; returns once it answers."""
        if self.is_alive():
            return
        self._discard()
        if not os.access(self.python, os.X_OK):  # before jupyter_client logs its own error
            reason = f"{self.python} does not exist or cannot be run"
            raise SubKernelStartError(self.env_id, str(self.python), reason)
        runtime = Path(jupyter_runtime_dir())
        runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
        connection_file = str(runtime / f"kernel-nbenv-{uuid.uuid4()}.json")
        watch_args = {"ppid": os.getpid(), "leftovers": [connection_file, str(self._tmp)]}
        spec = KernelSpec(
            argv=[
                str(self.python), "-m", "ipykernel_launcher", "-f", "{connection_file}",
                # history in memory: no start-up cost, no writes into the user's history db
                "--HistoryManager.hist_file=:memory:",
                f"--IPKernelApp.exec_lines=exec({_WATCH_PARENT!r}, {watch_args!r})",
                *_NO_PARENT_POLLER,
            ],
            display_name=f"nbenv {self.env_id[:12]}",
            language="python",
            interrupt_mode="signal",
        )  # fmt: skip
        km = _Manager(spec, connection_file=connection_file, log=_log)
        self._tmp.mkdir(mode=0o700, exist_ok=True)
        with self._log.open("ab") as log:
            self._log_start = log.tell()
            try:
                # the log takes ipykernel's start-up chatter (and its TCP warning), which
                # would otherwise land in the parent's captured stderr, i.e. in the cell
                km.start_kernel(env=self._child_env(), stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL)  # fmt: skip
            except OSError as exc:
                with contextlib.suppress(Exception):
                    km.cleanup_resources()
                raise SubKernelStartError(self.env_id, str(self.python), str(exc)) from None
        self._km = km
        kc = km.client()
        kc.start_channels(shell=True, iopub=True, stdin=True, hb=False, control=False)
        self._kc = kc
        poller = zmq.Poller()
        for channel in (kc.iopub_channel, kc.stdin_channel, kc.shell_channel):
            poller.register(channel.socket, zmq.POLLIN)
        self._poller = poller
        try:
            self._wait_ready(time.monotonic() + self.start_timeout)
        except BaseException:
            self._discard(note_loss=False)
            raise

    def interrupt(self) -> None:
        """Send the child a SIGINT (to its process group: its subprocesses too)."""
        if self._km is not None and self.is_alive():
            self._km.interrupt_kernel()

    def shutdown(self) -> None:
        """Stop the child (politely, then by force) and free its files; it leaves its
        pool, whose next `get` for the env starts a new one."""
        if self._pool is not None and self in self._pool._kernels:
            self._pool._kernels.remove(self)
        _stop([self])
        shutil.rmtree(self._tmp, ignore_errors=True)

    def retarget(self, new_env_dir: Path, new_env_id: str) -> None:
        """Move the running child onto another env whose packages are a superset of this
        one's at the same versions: its state stays, new imports come from the new env.
        Modules already imported stay loaded from the old env, which must not be removed
        while the child runs (it counts as in use: the process runs the old env's python)."""
        new_env_dir = Path(new_env_dir)
        if self._pool is not None:
            other = self._pool.find(new_env_id)
            if other is not None and other is not self:
                raise SubKernelError(
                    f"env {new_env_id[:12]} already has its own kernel; use that one"
                )
        try:
            new_python = new_env_dir / self.python.relative_to(self.env_dir)
        except ValueError:
            new_python = new_env_dir / "bin" / self.python.name
        if self.is_alive():
            args: dict[str, object] = {"old": str(self.env_dir), "new": str(new_env_dir),
                                       "python": str(new_python)}  # fmt: skip
            shell = self._pool._shell if self._pool is not None else None
            self._call(_RETARGET, args, _ParentOutput(shell))
        self.env_dir, self.env_id, self.python = new_env_dir, new_env_id, new_python

    # -- running cells ---------------------------------------------------------------------

    def run_cell(
        self,
        code: str,
        shell: InteractiveShell,
        *,
        inputs: Mapping[str, object] = _NO_INPUTS,
        outputs: Sequence[str] = (),
    ) -> dict[str, object]:
        """Run `code` in the child, its output relayed into the current cell of `shell`.
        `inputs` are set in the child's namespace first; the values of `outputs` (names in
        the child) are returned. Raises ChildExecutionError when the code raises,
        ChildInterrupted, ChildCrashedError, VariableTransferError, SubKernelStartError."""
        if self._busy:
            raise SubKernelError(f"the kernel of env {self.env_id[:12]} is already running a cell")
        out = _ParentOutput(shell)
        out.flush()
        self._busy = True
        try:
            if not self.is_alive():
                self.start()
            if self._lost:
                note = f"nbenv: the env's kernel had stopped ({self._lost}); this cell runs "
                note += "in a fresh one: state was lost.\n"
                out.send({}, "stream", {"name": "stderr", "text": note}, out.parent_header())
                self._lost = None
            if inputs:
                self._send_inputs(inputs, out)
            self._number_like(shell)
            reply = self._run(code, out, user=True)
            if reply.get("status") != "ok":
                raise ChildExecutionError.from_child(*_error_of(reply)) from None
            return self._fetch_outputs(outputs, out) if outputs else {}
        finally:
            self._busy = False

    def forward_comm(self, msg: dict[str, Any], shell: InteractiveShell) -> None:
        """Hand the child a frontend's comm_msg/comm_close for one of its comms, and relay
        what the child says in return (widget updates, output) until it is idle."""
        comm_id = msg["content"].get("comm_id")
        msg_type = msg["header"]["msg_type"]
        if msg_type == "comm_close":
            self._comms.pop(comm_id, None)
        if self._busy or self._kc is None or not self.is_alive():
            return  # a dead child's widgets are gone; a busy one cannot be reentered
        out = _ParentOutput(shell)
        session = self._kc.session
        child_msg = session.msg(msg_type, msg["content"], metadata=msg.get("metadata") or {})
        buffers = [memoryview(b).tobytes() for b in msg.get("buffers") or []]
        session.send(self._kc.shell_channel.socket, child_msg, buffers=buffers)
        msg_id = child_msg["header"]["msg_id"]
        self._remember(msg_id, out.parent_header())
        self._busy = True
        try:
            self._wait(msg_id, out, relay=True, want_reply=False)
        finally:
            self._busy = False

    def _number_like(self, shell: InteractiveShell) -> None:
        """Make the child number the cell as the parent does, so that its tracebacks say
        "Cell In[n]" of the cell the user sees. Only when the numbers differ (consecutive
        cells stay in step), and not waited for: the child runs requests in order, and the
        silent request adds nothing to the output."""
        count = getattr(shell, "execution_count", None)  # IPython >= 8: the cell's number + 1
        if not isinstance(count, int) or count < 2 or self._kc is None:
            return
        if count - 1 != self._child_count:
            code = f"__import__('IPython').get_ipython().execution_count = {count - 1}"
            self._kc.execute(code, silent=True, store_history=False, allow_stdin=False,
                             stop_on_error=False)  # fmt: skip
        self._child_count = count  # after the user's cell, which the child counts

    def _run(self, code: str, out: _ParentOutput, *, user: bool) -> dict[str, Any]:
        """Execute `code`; for the user's code relay its output, else (nbenv's helper code)
        keep it silent. Returns the execute_reply content."""
        assert self._kc is not None
        msg_id = self._kc.execute(
            code,
            silent=not user,
            store_history=user,
            allow_stdin=user and out.stdin_allowed(),
            stop_on_error=False,  # one request at a time: nothing queued to abort
        )
        if user:
            self._remember(msg_id, out.parent_header())
        reply, interrupted, failure = self._wait(msg_id, out, relay=user, want_reply=True)
        if failure is not None:
            raise failure
        if interrupted:
            if reply.get("status") == "error":
                raise ChildInterrupted.from_child(*_error_of(reply)) from None
            raise ChildInterrupted.from_child("KeyboardInterrupt", "", []) from None
        return reply

    def _wait(
        self, msg_id: str, out: _ParentOutput, *, relay: bool, want_reply: bool
    ) -> tuple[dict[str, Any], bool, BaseException | None]:
        """Relay the child's messages until it is idle after `msg_id` (and has replied to
        it): iopub to the parent cell, input requests to the parent's frontend. Returns the
        reply content, whether the parent was interrupted meanwhile, and an error from the
        parent's side to raise (its input() failed)."""
        assert self._kc is not None and self._poller is not None
        iopub = self._kc.iopub_channel.socket
        stdin = self._kc.stdin_channel.socket
        shell = self._kc.shell_channel.socket
        reply: dict[str, Any] | None = None
        idle = interrupted = False
        failure: BaseException | None = None
        while not idle or (want_reply and reply is None):
            try:
                ready = dict(self._poller.poll(_POLL_MS))
                if not ready:
                    self._check_alive(out)
                    continue
                if iopub in ready:
                    idle = self._drain_iopub(msg_id, out, relay=relay) or idle
                if stdin in ready:
                    failure = self._answer_input(out) or failure
                if shell in ready:
                    _, msg = self._kc.session.recv(shell)
                    if msg is not None and msg["parent_header"].get("msg_id") == msg_id:
                        reply = msg["content"]
            except KeyboardInterrupt:
                if interrupted:  # a second interrupt: the child ignores them
                    self._crashed(out, raise_=False)
                    raise ChildInterrupted.from_child(
                        "KeyboardInterrupt",
                        "the env's kernel did not stop at the interrupt and was killed; "
                        "it restarts on next use; state was lost",
                        [],
                    ) from None
                interrupted = True
                self.interrupt()
        return reply or {}, interrupted, failure

    def _drain_iopub(self, msg_id: str, out: _ParentOutput, *, relay: bool) -> bool:
        """Relay every iopub message that is there; True once the child is idle after msg_id."""
        assert self._kc is not None
        idle = False
        while True:
            _, msg = self._kc.session.recv(self._kc.iopub_channel.socket)
            if msg is None:
                return idle
            msg_type = msg["header"]["msg_type"]
            content = msg["content"]
            parent_id = msg["parent_header"].get("msg_id")
            mine = parent_id == msg_id
            if msg_type == "status":
                idle = idle or (mine and content.get("execution_state") == "idle")
                continue
            if mine and not relay:
                continue  # nbenv's helper code: nothing of it belongs to the user
            # late output (a thread of an earlier cell) goes where its request came from
            parent = self._origins.get(parent_id or "") or out.parent_header()
            if msg_type in _COMMS:
                self._track_comm(msg_type, content)
                out.send(msg, msg_type, self._capture_target(content), parent)
            elif msg_type == "stream":
                text = content.get("text", "")
                if content.get("name") == "stderr" and _TCP_WARNING in text:
                    text = "".join(
                        line for line in text.splitlines(True) if _TCP_WARNING not in line
                    )
                if text:
                    out.send(msg, "stream", {**content, "text": text}, parent)
            elif msg_type == "execute_result":
                # the parent owns the execution count: a result shows as a display
                display = {"data": content.get("data", {}), "metadata": content.get("metadata", {}),
                           "transient": {}}  # fmt: skip
                out.send(msg, "display_data", display, parent)
            elif msg_type in _OUTPUTS:
                out.send(msg, msg_type, content, parent)
            # error: raised as ChildExecutionError from the reply; execute_input: the parent
            # cell shows the code already

    def _answer_input(self, out: _ParentOutput) -> BaseException | None:
        assert self._kc is not None
        _, msg = self._kc.session.recv(self._kc.stdin_channel.socket)
        if msg is None or msg["header"]["msg_type"] != "input_request":
            return None
        content = msg["content"]
        try:
            answer = out.ask(str(content.get("prompt", "")), bool(content.get("password")))
        except KeyboardInterrupt:
            raise  # the child, waiting in input(), gets the interrupt
        except Exception as exc:
            # the child waits for an answer that will not come: stop it there, then report
            # the parent's failure instead of the child's KeyboardInterrupt
            self.interrupt()
            return exc
        self._kc.input(answer)
        return None

    def _track_comm(self, msg_type: str, content: dict[str, Any]) -> None:
        comm_id = content.get("comm_id")
        if not isinstance(comm_id, str):
            return
        if msg_type == "comm_open":
            self._comms[comm_id] = self
        elif msg_type == "comm_close":
            self._comms.pop(comm_id, None)

    def _capture_target(self, content: dict[str, Any]) -> dict[str, Any]:
        """An ipywidgets Output widget captures the output of the request whose msg_id its
        `msg_id` state names; the child names its own request, which the frontend never
        sees: name the parent's request that output is relayed under instead."""
        data = content.get("data")
        state = data.get("state") if isinstance(data, dict) else None
        child_id = state.get("msg_id") if isinstance(state, dict) else None
        origin = self._origins.get(child_id) if isinstance(child_id, str) else None
        if not origin or not origin.get("msg_id"):
            return content
        assert isinstance(data, dict) and isinstance(state, dict)
        return {**content, "data": {**data, "state": {**state, "msg_id": origin["msg_id"]}}}

    def _remember(self, msg_id: str, parent: dict[str, Any]) -> None:
        self._origins[msg_id] = parent
        while len(self._origins) > 256:
            self._origins.popitem(last=False)

    # -- variables -------------------------------------------------------------------------

    def _send_inputs(self, inputs: Mapping[str, object], out: _ParentOutput) -> None:
        blobs: dict[str, bytes] = {}
        for name, value in inputs.items():
            try:
                blobs[name] = pickle.dumps(value, protocol=PICKLE_PROTOCOL)
            except Exception as exc:
                reason = f"it cannot be pickled ({type(exc).__name__}: {exc})"
                raise VariableTransferError(name, "in", reason) from None
        path, result = self._tmp / f"in-{uuid.uuid4().hex}", self._tmp / f"in-{uuid.uuid4().hex}"
        try:
            path.write_bytes(pickle.dumps(blobs, protocol=PICKLE_PROTOCOL))
            self._call(_SET_INPUTS, {"path": str(path), "result": str(result)}, out)
            if result.exists():
                errors: dict[str, str] = pickle.loads(result.read_bytes())
                name, reason = next(iter(errors.items()))
                raise VariableTransferError(name, "in", reason)
        finally:
            path.unlink(missing_ok=True)
            result.unlink(missing_ok=True)

    def _fetch_outputs(self, names: Sequence[str], out: _ParentOutput) -> dict[str, object]:
        path = self._tmp / f"out-{uuid.uuid4().hex}"
        args: dict[str, object] = {"names": list(names), "path": str(path),
                                   "protocol": PICKLE_PROTOCOL}  # fmt: skip
        try:
            self._call(_GET_OUTPUTS, args, out)
            blobs, errors = pickle.loads(path.read_bytes())
        finally:
            path.unlink(missing_ok=True)
        values: dict[str, object] = {}
        for name in names:
            if name in errors:
                raise VariableTransferError(name, "out", errors[name])
            try:
                values[name] = pickle.loads(blobs[name])
            except Exception as exc:
                reason = f"this kernel cannot load it ({type(exc).__name__}: {exc})"
                raise VariableTransferError(name, "out", reason) from None
        return values

    def _call(self, source: str, args: dict[str, object], out: _ParentOutput) -> None:
        """Run nbenv's helper code in the child, silently and leaving no names behind."""
        namespace = "__import__('IPython').get_ipython().user_ns"
        code = f"exec({source!r}, dict(ns={namespace}, args={args!r}))"
        reply = self._run(code, out, user=False)
        if reply.get("status") != "ok":
            ename, evalue, _ = _error_of(reply)
            raise SubKernelError(f"nbenv's code failed in the env's kernel: {ename}: {evalue}")

    # -- start, death, stop ----------------------------------------------------------------

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        # the parent's import path must not leak into the env: that would undo the isolation
        for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONEXECUTABLE"):
            env.pop(name, None)
        env["VIRTUAL_ENV"] = str(self.env_dir)
        bin_dir = str(self.python.parent)
        env["PATH"] = os.pathsep.join([bin_dir, *(p for p in env.get("PATH", "").split(os.pathsep)
                                                  if p and p != bin_dir)])  # fmt: skip
        # keep frozen modules (fast start) without debugpy's warning about them
        env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
        if (self.env_dir / "conda-meta").is_dir():  # a conda or mixed env: activate its prefix
            from nbenv.conda import activation_env

            env.update(activation_env(self.env_dir, base=env))
        return env

    def _wait_ready(self, deadline: float) -> None:
        """Until the child answers kernel_info and its iopub messages reach us (a SUB socket
        misses whatever is published before it is connected)."""
        assert self._kc is not None and self._poller is not None
        iopub = self._kc.iopub_channel.socket
        shell = self._kc.shell_channel.socket
        self._kc.kernel_info()
        replied_at: float | None = None
        while True:
            now = time.monotonic()
            if now > deadline:
                raise SubKernelStartError(
                    self.env_id, str(self.python),
                    f"no answer within {self.start_timeout:.0f} s", self._output(),
                )  # fmt: skip
            ready = dict(self._poller.poll(50))
            if shell in ready:
                _, msg = self._kc.session.recv(shell)
                if msg is not None and msg["msg_type"] == "kernel_info_reply":
                    replied_at = now
            if iopub in ready and replied_at is not None:
                while self._kc.session.recv(iopub)[1] is not None:
                    pass
                return
            if replied_at is not None and now - replied_at > 0.2:
                self._kc.kernel_info()  # its status messages will show iopub is connected
                replied_at = now
            if not ready and self._exit_code() is not None:
                reason = f"its process exited ({self._exit_code()})"
                raise SubKernelStartError(self.env_id, str(self.python), reason, self._output())

    def _exit_code(self) -> int | None:
        """None while the child runs."""
        if self._km is None:
            return -1
        process = getattr(self._km.provisioner, "process", None)
        if process is not None:
            code = process.poll()
            return None if code is None else int(code)
        return None if self._km.is_alive() else -1

    def _check_alive(self, out: _ParentOutput) -> None:
        if self._exit_code() is not None:
            self._crashed(out, raise_=True)

    def _crashed(self, out: _ParentOutput, *, raise_: bool) -> None:
        """The child died (or is being killed) mid-request: relay its last output, tell the
        frontend its widgets are gone, free it; raise ChildCrashedError."""
        assert self._kc is not None
        with contextlib.suppress(Exception):
            self._drain_iopub("", out, relay=True)
        for comm_id in [c for c, k in self._comms.items() if k is self]:
            with contextlib.suppress(Exception):
                content = {"comm_id": comm_id, "data": {}}
                out.send({}, "comm_close", content, out.parent_header())
        code = self._exit_code()
        output = self._output()
        self._discard(note_loss=False)  # the error (or the interrupt's message) says it
        if raise_:
            raise ChildCrashedError(self.env_id, code, output)

    def _output(self) -> str:
        """What the child wrote to its stdout/stderr since it started, minus ipykernel's
        TCP warning: the last words of a child that crashed or did not start."""
        try:
            with self._log.open("rb") as log:
                log.seek(self._log_start)
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "".join(line for line in text.splitlines(True) if _TCP_WARNING not in line)

    def _discard(self, *, note_loss: bool = True) -> None:
        """Forget the current child, killing it if it still runs. `note_loss`: if it died on
        its own, the next cell says that its state was lost."""
        code = self._exit_code() if self._km is not None else None
        if note_loss and code is not None:
            self._lost = ChildCrashedError(self.env_id, code).status
        for comm_id in [c for c, k in self._comms.items() if k is self]:
            del self._comms[comm_id]
        if self._kc is not None:
            with contextlib.suppress(Exception):
                self._kc.stop_channels()
        if self._km is not None:
            with contextlib.suppress(Exception):
                self._km.shutdown_kernel(now=True)  # kills its process group, frees ports
        self._kc = self._km = self._poller = None
        self._child_count = 1

    def _request_shutdown(self) -> None:
        if self._km is not None and self.is_alive():
            with contextlib.suppress(Exception):
                self._km.request_shutdown()

    def _finish_shutdown(self, deadline: float) -> None:
        while self._km is not None and self.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if self._busy and threading.current_thread() is not threading.main_thread():
            # ipykernel shuts down from its control thread while the main thread may wait
            # on this child in its sockets: only end the process; the main thread sees it
            # die and cleans up
            if self._km is not None and self.is_alive():
                with contextlib.suppress(Exception):
                    self._km.signal_kernel(signal.SIGKILL)
            return
        self._discard(note_loss=False)


class SubKernelPool:
    """The children of one parent kernel, one per env. Children are stopped when the
    parent shuts down or exits; widget messages for their comms are routed to them."""

    def __init__(self, shell: InteractiveShell | None = None) -> None:
        self._shell = shell
        self._kernels: list[SubKernel] = []
        self._comms: dict[str, SubKernel] = {}
        atexit.register(self.shutdown_all)
        kernel = getattr(shell, "kernel", None)
        if kernel is not None:
            self._hook_kernel(kernel)

    @property
    def kernels(self) -> tuple[SubKernel, ...]:
        return tuple(self._kernels)

    def find(self, env_id: str) -> SubKernel | None:
        return next((k for k in self._kernels if k.env_id == env_id), None)

    def get(self, env_id: str, python: Path, env_dir: Path) -> SubKernel:
        """The child for `env_id`, started (or restarted) and ready."""
        kernel = self.find(env_id)
        if kernel is None:
            kernel = SubKernel(env_id, Path(python), Path(env_dir), pool=self)
            try:
                kernel.start()
            except BaseException:
                shutil.rmtree(kernel._tmp, ignore_errors=True)
                raise
            self._kernels.append(kernel)
        else:
            kernel.start()
        return kernel

    def shutdown_all(self) -> None:
        kernels, self._kernels = self._kernels, []
        _stop(kernels)
        for kernel in kernels:
            shutil.rmtree(kernel._tmp, ignore_errors=True)
        self._comms.clear()

    def _hook_kernel(self, kernel: Any) -> None:
        handlers = getattr(kernel, "shell_handlers", None)
        if isinstance(handlers, dict):
            for msg_type in ("comm_msg", "comm_close"):
                original = handlers.get(msg_type)
                if original is not None:
                    handlers[msg_type] = self._comm_handler(original, kernel)
        do_shutdown = getattr(kernel, "do_shutdown", None)
        if do_shutdown is not None:

            def shutdown_children_first(restart: bool) -> Any:
                self.shutdown_all()
                return do_shutdown(restart)

            kernel.do_shutdown = shutdown_children_first

    def _comm_handler(self, original: Any, kernel: Any) -> Any:
        def handle(stream: Any, ident: Any, msg: dict[str, Any]) -> Any:
            child = self._comms.get(msg["content"].get("comm_id"))
            if child is None or self._shell is None:
                return original(stream, ident, msg)  # the parent's own comm
            try:
                child.forward_comm(msg, self._shell)
            except Exception as exc:
                kernel.log.warning("nbenv: a widget message for an env's kernel failed: %s", exc)
            return None

        return handle


def pool_for(shell: InteractiveShell) -> SubKernelPool:
    """The pool of `shell`'s children, made on first use."""
    pool = _POOLS.get(shell)
    if pool is None:
        pool = _POOLS[shell] = SubKernelPool(shell)
    return pool


_POOLS: weakref.WeakKeyDictionary[Any, SubKernelPool] = weakref.WeakKeyDictionary()


def _stop(kernels: Sequence[SubKernel]) -> None:
    """Ask every child to shut down at once, then kill the ones still there after a grace."""
    for kernel in kernels:
        kernel._request_shutdown()
    deadline = time.monotonic() + _SHUTDOWN_GRACE
    for kernel in kernels:
        kernel._finish_shutdown(deadline)


def _error_of(reply: dict[str, Any]) -> tuple[str, str, list[str]]:
    if reply.get("status") == "aborted":
        return "Aborted", "the env's kernel aborted the request", []
    traceback = [str(line) for line in reply.get("traceback") or []]
    return str(reply.get("ename", "Error")), str(reply.get("evalue", "")), traceback
