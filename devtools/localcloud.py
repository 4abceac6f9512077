"""The local cloud: Google's Pub/Sub emulator, optionally the GCS emulator, Google's Bigtable emulator
with the live table (when a function declares ``"bigtable"`` in topology.json), every function in its
own functions-framework process, the topics and subscriptions of ``infra/topology.json`` (push
subscriptions pointing at the CloudEvent functions, the archive's pull subscription, a dead-letter
topic), and a scheduler that publishes the ticks on the schedules declared there.

    python -m devtools.localcloud up [--detach] [--port-base 8080] [--store local|gcs] [--every clean-hourly=20]
    python -m devtools.localcloud status
    python -m devtools.localcloud down

``up`` without ``--detach`` runs in the foreground until Ctrl-C; with it, a background process
holds the stack and ``down`` stops it (SIGTERM, clean shutdown). State and logs live in
``var/stack/`` (``state.json``, ``secrets.json`` with freshly generated webhook secrets,
``identity.json`` with the local viewer-token key pair and the dashboard's operator token,
``logs/<function>.log``). Ports: Pub/Sub emulator ``port_base+5``... see ``Ports``.

Supervision: a thread restarts a function whose process died (backoff ``restart_backoff_s``: 1 s,
doubling to 30 s, reset after a minute up). ``status`` checks every function (HTTP), every emulator
(process + API) and the holding process; anything down -> ``DOWN`` and exit code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets as pysecrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from devtools import emulators
from shared.log import get_logger
from shared.settings import dev_settings

log = get_logger("localcloud")
ROOT = emulators.REPO_ROOT
TOPOLOGY_PATH = ROOT / "infra" / "topology.json"
STATE_DIR = ROOT / "var" / "stack"


def load_topology(path: Path = TOPOLOGY_PATH) -> dict:
    return json.loads(Path(path).read_text())


@dataclass(frozen=True)
class Ports:
    base: int = 8080

    def function(self, offset: int) -> int:
        return self.base + offset

    @property
    def pubsub(self) -> int:
        return self.base + 605  # 8685 by default

    @property
    def gcs(self) -> int:
        return self.base + 943  # 9023 by default

    @property
    def bigtable(self) -> int:
        return self.base + 606  # 8686 by default

    @classmethod
    def free(cls, topology: dict | None = None, lo: int = 20000, hi: int = 31000, tries: int = 200) -> Ports:
        """A base whose every port (each function's offset and the emulators') is free now; bases are
        drawn below Linux's ephemeral range (32768+) so a client socket cannot take one meanwhile."""
        import random
        import socket

        offsets = {spec["port_offset"] for spec in (topology or load_topology())["functions"].values()}
        offsets |= {cls(0).pubsub, cls(0).gcs, cls(0).bigtable}

        def free(port: int) -> bool:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                    return True
                except OSError:
                    return False

        for _ in range(tries):
            base = random.randrange(lo, hi - max(offsets), 10)
            if all(free(base + off) for off in offsets):
                return cls(base)
        raise RuntimeError(f"no free port range for the local stack in {lo}..{hi}")


class Scheduler(threading.Thread):
    """Publishes each schedule's payload to its topic at the times its cron expression gives.

    ``overrides`` maps a schedule name to a fixed interval in seconds (demos and tests cannot wait
    an hour for the hourly clean); ``fire(name)`` publishes one tick now.
    """

    def __init__(self, bus, schedules: dict, overrides: dict[str, float] | None = None):
        super().__init__(name="scheduler", daemon=True)
        self.bus = bus
        self.schedules = schedules
        self.overrides = overrides or {}
        self._stop = threading.Event()
        self.fired: list[tuple[str, str]] = []

    def fire(self, name: str) -> str:
        spec = self.schedules[name]
        now = datetime.now(UTC).isoformat(timespec="seconds")
        payload = {**spec.get("payload", {}), "schedule": name, "scheduled_at": now}
        mid = self.bus.publish(spec["topic"], json.dumps(payload).encode(), schedule=name)
        self.fired.append((name, now))
        log.info("tick", extra={"schedule": name, "topic": spec["topic"], "message_id": mid})
        return mid

    def _next(self, name: str, after: float) -> float:
        if name in self.overrides:
            return after + float(self.overrides[name])
        from croniter import croniter

        return croniter(self.schedules[name]["cron"], after).get_next(float)

    def run(self) -> None:
        now = time.time()
        due = {name: self._next(name, now) for name in self.schedules}
        while not self._stop.is_set():
            name = min(due, key=due.get)
            if self._stop.wait(max(0.0, due[name] - time.time())):
                break
            try:
                self.fire(name)
            except Exception:  # a tick that cannot be published is logged; the next one will come
                log.exception("tick failed", extra={"schedule": name})
            due[name] = self._next(name, time.time())

    def stop(self) -> None:
        self._stop.set()


class Stack:
    def __init__(
        self,
        *,
        port_base: int = 8080,
        store: str = "local",
        state_dir: Path = STATE_DIR,
        functions: list[str] | None = None,
        overrides: dict[str, float] | None = None,
        scheduler: bool = True,
        project: str = "daihuo-local",
        fresh: bool = False,
        push_backoff_s: tuple[float, float] = (1.0, 10.0),
        extra_env: dict[str, str] | None = None,
        restart_backoff_s: tuple[float, float] = (1.0, 30.0),
        supervise: bool = True,
    ):
        self.topology = load_topology()
        self.ports = Ports(port_base)
        self.store_kind = store
        self.state_dir = Path(state_dir)
        self.log_dir = self.state_dir / "logs"
        self.project = project
        self.fresh = fresh
        self.wanted = functions
        self.overrides = overrides or {}
        self.use_scheduler = scheduler
        self.push_backoff_s = push_backoff_s
        self.extra_env = extra_env or {}
        self.supervise = supervise
        self.procs: dict[str, emulators.Emulator] = {}
        self.env: dict[str, str] = {}
        self.bus = None
        self.scheduler: Scheduler | None = None
        self.secrets: dict[str, str] = {}
        self.identity: dict[str, str] = {}
        self.restarts: dict[str, int] = {}
        self.restart_backoff_s = restart_backoff_s
        self._supervisor: threading.Thread | None = None
        self._stopping = threading.Event()
        self._proc_lock = threading.Lock()

    # -- helpers -------------------------------------------------------------------------------
    def url(self, function: str) -> str:
        return f"http://127.0.0.1:{self.ports.function(self.topology['functions'][function]['port_offset'])}/"

    def functions(self) -> list[str]:
        names = [n for n in self.topology["functions"] if (ROOT / "functions" / n / "main.py").exists()]
        return [n for n in names if self.wanted is None or n in self.wanted]

    def _store_url(self) -> str:
        if self.store_kind == "gcs":
            return "gs://daihuo-default/daihuo"
        if self.store_kind == "local":
            return str(self.state_dir / "store")
        return self.store_kind  # an explicit URL: gs://…, s3://…, a path

    def _secrets(self) -> dict[str, str]:
        path = self.state_dir / "secrets.json"
        if path.exists() and not self.fresh:
            return json.loads(path.read_text())
        values = {"douyin": pysecrets.token_hex(32), "kuaishou": pysecrets.token_hex(32)}
        path.write_text(json.dumps(values))
        path.chmod(0o600)
        return values

    def _identity(self) -> dict[str, str]:
        """Local viewer-token key pair (recommend holds the public key; the demo / a local viewer app
        mints with the private one) and the operator token of the analytics function. Generated once
        into ``identity.json`` (0600, never committed), like the webhook secrets."""
        path = self.state_dir / "identity.json"
        if path.exists() and not self.fresh:
            return json.loads(path.read_text())
        from shared import identity

        priv, pub = identity.keygen()
        values = {
            "viewer_kid": "local-1",
            "viewer_private": identity.b64url(priv),
            "viewer_public": identity.b64url(pub),
            "operator_token": pysecrets.token_urlsafe(32),
        }
        path.write_text(json.dumps(values))
        path.chmod(0o600)
        return values

    def viewer_token(self, user_id: str, ttl_s: int = 600) -> str:
        from shared import identity

        ident = self.identity
        return identity.mint(identity.unb64url(ident["viewer_private"]), ident["viewer_kid"], user_id, ttl_s=ttl_s)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> Stack:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.fresh and (self.state_dir / "store").exists():
            import shutil

            shutil.rmtree(self.state_dir / "store")
        self.secrets = self._secrets()
        self.identity = self._identity()
        try:
            ps = emulators.start_pubsub(self.ports.pubsub, project=self.project, log_dir=self.log_dir)
            self.procs["pubsub-emulator"] = ps
            self.env.update(ps.env)
            if any(self.topology["functions"][n].get("bigtable") for n in self.functions()):
                self._start_bigtable()
            if self.store_kind == "gcs":
                gcs = emulators.start_gcs(self.ports.gcs, log_dir=self.log_dir)
                self.procs["gcs-emulator"] = gcs
                self.env.update(gcs.env)
            self.env.update(
                {
                    "DAIHUO_STORE": self._store_url(),
                    "PUBSUB_PROJECT_ID": self.project,
                    "GOOGLE_CLOUD_PROJECT": self.project,
                    **self.extra_env,
                }
            )
            self.env.update({f"DAIHUO_SECRET_{p.upper()}": s for p, s in self.secrets.items()})
            self.env.update(
                {
                    "DAIHUO_VIEWER_KEYS": json.dumps({self.identity["viewer_kid"]: self.identity["viewer_public"]}),
                    "DAIHUO_OPERATOR_TOKENS": self.identity["operator_token"],
                }
            )
            self._saved_env = {k: os.environ.get(k) for k in self.env}
            os.environ.update(self.env)  # this process's clients (bus, store) talk to the stack
            from shared.adapters.bus import Bus

            self.bus = Bus(self.project)
            self._declare_messaging(push=False)
            for name in self.functions():
                self.procs[name] = self._start_function(name)
            self._declare_messaging(push=True)
            if self.use_scheduler:
                self.scheduler = Scheduler(self.bus, self.topology["schedules"], self.overrides)
                self.scheduler.start()
            self._write_state()
            if self.supervise:
                self._stopping.clear()
                self._supervisor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
                self._supervisor.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_bigtable(self) -> None:
        """The Bigtable emulator (in memory) and the live table, created with the GC rules of
        shared/live/schema.py (in the cloud: infra/live.tf)."""
        bt = emulators.start_bigtable(self.ports.bigtable, project=self.project, log_dir=self.log_dir)
        self.procs["bigtable-emulator"] = bt
        self.env.update(bt.env)
        self.env.update({"DAIHUO_BIGTABLE_PROJECT": self.project})
        from shared.live import schema
        from shared.live.config import LiveConfig

        old = os.environ.get("BIGTABLE_EMULATOR_HOST")
        os.environ["BIGTABLE_EMULATOR_HOST"] = bt.host
        try:
            env = {**os.environ, **self.env, **self.extra_env}
            schema.ensure_table(
                LiveConfig(
                    project=self.project,
                    instance=env.get("DAIHUO_BIGTABLE_INSTANCE", "daihuo-live"),
                    table=env.get("DAIHUO_LIVE_TABLE", "live"),
                )
            )
        finally:
            if old is None:
                os.environ.pop("BIGTABLE_EMULATOR_HOST", None)
            else:
                os.environ["BIGTABLE_EMULATOR_HOST"] = old

    def _start_function(self, name: str) -> emulators.Emulator:
        spec = self.topology["functions"][name]
        sig = "http" if spec["trigger"] == "http" else "cloudevent"
        return emulators.start_function(
            name,
            spec["entry_point"],
            port=self.ports.function(spec["port_offset"]),
            signature_type=sig,
            env=self.env,
            log_dir=self.log_dir,
            timeout=60,
        )

    def _supervise(self) -> None:
        """Restart a function whose process died, with exponential backoff per function (``restart_backoff_s``
        = (first, max) seconds; the delay doubles after each restart that did not stay up for a minute).
        Emulators are not restarted (a new Pub/Sub emulator has no topics; ``status`` reports it down)."""
        first, cap = self.restart_backoff_s
        delay = dict.fromkeys(self.functions(), first)
        up_since = {n: time.monotonic() for n in self.functions()}
        while not self._stopping.wait(0.5):
            for name in self.functions():
                proc = self.procs.get(name)
                if proc is None or proc.proc.poll() is None:
                    if proc is not None and time.monotonic() - up_since[name] > 60:
                        delay[name] = first  # stayed up: the next crash restarts quickly again
                    continue
                code = proc.proc.returncode
                try:  # leftovers of the dead process group (a gunicorn worker) must free the port
                    os.killpg(proc.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                log.error(
                    "function died; restarting", extra={"function": name, "exit_code": code, "backoff_s": delay[name]}
                )
                if self._stopping.wait(delay[name]):
                    return
                try:
                    with self._proc_lock:
                        if self._stopping.is_set():
                            return
                        self.procs[name] = self._start_function(name)
                    self.restarts[name] = self.restarts.get(name, 0) + 1
                    up_since[name] = time.monotonic()
                    log.info("function restarted", extra={"function": name, "restarts": self.restarts[name]})
                    self._write_state()
                except Exception as exc:  # the port still busy, ...: try again after a longer pause
                    log.error("restart failed", extra={"function": name, "error": str(exc)})
                delay[name] = min(cap, delay[name] * 2)

    def _declare_messaging(self, push: bool) -> None:
        topo = self.topology
        if not push:
            for topic in topo["topics"]:
                self.bus.ensure_topic(topic)
            for name, spec in topo["pull_subscriptions"].items():
                self.bus.ensure_subscription(name, spec["topic"], ack_deadline_s=min(600, spec["ack_deadline_s"]))
            self.bus.ensure_subscription("dead-letters-inspect", "dead-letters")
            return
        d = topo["push_defaults"]
        for name in self.functions():
            spec = topo["functions"][name]
            if spec["trigger"] not in ("topic", "push"):
                continue
            # "topic": Eventarc owns the subscription in the cloud; "push": our own (infra/live.tf)
            p = {**d, **spec.get("push", {})}
            self.bus.ensure_subscription(
                spec.get("subscription") or f"{name}-push",
                spec["topic"],
                push_endpoint=self.url(name),
                ack_deadline_s=p["ack_deadline_s"],
                dead_letter_topic=d["dead_letter_topic"],
                max_delivery_attempts=p["max_delivery_attempts"],
                min_backoff_s=min(self.push_backoff_s[0], p["min_backoff_s"]),
                max_backoff_s=min(self.push_backoff_s[1], p["max_backoff_s"]),
            )

    def _write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "store": self.env.get("DAIHUO_STORE"),
            "env": {k: v for k, v in self.env.items() if "SECRET" not in k and "TOKEN" not in k},
            "functions": {n: self.url(n) for n in self.functions()},
            "emulators": {n: e.host for n, e in self.procs.items() if n.endswith("emulator")},
            "pids": {n: e.proc.pid for n, e in self.procs.items()},
            "restarts": dict(self.restarts),
            "logs": str(self.log_dir),
        }
        (self.state_dir / "state.json").write_text(json.dumps(state, indent=2))

    def health(self) -> dict[str, bool]:
        import urllib.error
        import urllib.request

        out = {}
        for name, proc in self.procs.items():
            alive = proc.proc.poll() is None
            if alive and not name.endswith("emulator"):
                try:
                    urllib.request.urlopen(f"http://{proc.host}/__health", timeout=2).read()
                except urllib.error.HTTPError:
                    pass  # any HTTP answer means the server is up
                except Exception:
                    alive = False
            out[name] = alive
        return out

    def fire(self, schedule: str) -> str:
        sched = self.scheduler or Scheduler(self.bus, self.topology["schedules"])
        return sched.fire(schedule)

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            with self._proc_lock:  # a restart in progress finishes first (then it is stopped below)
                pass
            self._supervisor.join(timeout=5)
            self._supervisor = None
        if self.scheduler:
            self.scheduler.stop()
        for name in [n for n in self.procs if not n.endswith("emulator")] + [
            n for n in self.procs if n.endswith("emulator")
        ]:
            try:
                self.procs[name].stop()
            except Exception:
                log.exception("stop failed", extra={"process": name})
        self.procs.clear()
        if self.bus:
            try:
                self.bus.close()
            except Exception:
                pass
        state = self.state_dir / "state.json"
        if state.exists():
            state.unlink()
        for k, v in getattr(self, "_saved_env", {}).items():  # leave the environment as it was
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._saved_env = {}

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _probe(url: str) -> bool:
    """Up = the server answers HTTP at all (any status)."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=2).read()
        return True
    except urllib.error.HTTPError:
        return True
    except Exception:
        return False


def _probe_tcp(host: str) -> bool:
    import socket

    h, _, port = host.rpartition(":")
    try:
        with socket.create_connection((h, int(port)), timeout=2):
            return True
    except OSError:
        return False


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def status(state_dir: Path = STATE_DIR) -> tuple[bool, list[str]]:
    """Check the stack for real: the holding process, each function (its process and an HTTP answer),
    each emulator (its process and its API: Pub/Sub's root, the GCS JSON API). (ok, report lines)."""
    path = Path(state_dir) / "state.json"
    if not path.exists():
        return False, ["local cloud: not running"]
    state = json.loads(path.read_text())
    pids = state.get("pids", {})
    lines, ok = [], True
    holder = _pid_alive(state.get("pid"))
    ok &= holder
    lines.append(f"{'stack':16s} pid {state.get('pid')!s:22s} {'up' if holder else 'DOWN (stale state)'}")
    restarts = state.get("restarts", {})
    for name, url in state["functions"].items():
        up = _probe(url + "__health")  # the HTTP answer is the truth (the supervisor may have restarted it)
        ok &= up
        extra = f" (restarted {restarts[name]}x)" if restarts.get(name) else ""
        lines.append(f"{name:16s} {url:28s} {'up' if up else 'DOWN'}{extra}")
    for name, host in state["emulators"].items():
        api = f"http://{host}/storage/v1/b" if name.startswith("gcs") else f"http://{host}/"
        up = _pid_alive(pids.get(name)) if name in pids else True
        up = up and (_probe_tcp(host) if name.startswith("bigtable") else _probe(api))  # gRPC only
        ok &= up
        lines.append(f"{name:16s} {host:28s} {'up' if up else 'DOWN'}")
    lines.append(f"store {state['store']}   logs {state['logs']}   (since {state['started_at']})")
    return ok, lines


def _parse_overrides(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, _, sec = item.partition("=")
        out[name] = float(sec)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devtools.localcloud", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the local cloud")
    dev = dev_settings()
    up.add_argument("--port-base", type=int, default=dev.port_base)
    up.add_argument(
        "--store",
        default=dev.local_store,
        help="local (embedded default), gcs (the GCS emulator), or a store URL",
    )
    up.add_argument(
        "--every",
        action="append",
        default=[],
        metavar="SCHEDULE=SECONDS",
        help="run a schedule at a fixed interval instead of its cron (e.g. clean-hourly=30)",
    )
    up.add_argument("--detach", action="store_true", help="run in the background; stop with `down`")
    up.add_argument("--fresh", action="store_true", help="empty the local store and make new secrets")
    sub.add_parser("down", help="stop a detached local cloud")
    st = sub.add_parser("status", help="check every process and emulator (exit 1 if any is down)")
    st.add_argument("--state-dir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    state_path = STATE_DIR / "state.json"

    if args.cmd == "status":
        ok, lines = status(Path(args.state_dir) if args.state_dir else STATE_DIR)
        print("\n".join(lines))
        return 0 if ok else 1
    if args.cmd == "down":
        if not state_path.exists():
            print("local cloud: not running")
            return 0
        pid = json.loads(state_path.read_text())["pid"]
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            state_path.unlink(missing_ok=True)
            print("local cloud: stale state removed")
            return 0
        for _ in range(300):
            if not state_path.exists():
                print("local cloud: stopped")
                return 0
            time.sleep(0.1)
        print("local cloud: did not stop within 30 s", file=sys.stderr)
        return 1
    # up
    if state_path.exists():
        print(f"local cloud already running (see {state_path}); `make down` first", file=sys.stderr)
        return 1
    if args.detach:
        cmd = [
            sys.executable,
            "-m",
            "devtools.localcloud",
            "up",
            "--port-base",
            str(args.port_base),
            "--store",
            args.store,
        ]
        cmd += [f"--every={e}" for e in args.every] + (["--fresh"] if args.fresh else [])
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        with open(STATE_DIR / "stack.log", "ab") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        for _ in range(1200):
            if state_path.exists():
                print(state_path.read_text())
                return 0
            if proc.poll() is not None:
                print(f"local cloud failed to start; see {STATE_DIR / 'stack.log'}", file=sys.stderr)
                return 1
            time.sleep(0.1)
        return 1
    stack = Stack(port_base=args.port_base, store=args.store, overrides=_parse_overrides(args.every), fresh=args.fresh)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    stack.start()
    print(
        json.dumps(
            {
                "functions": {n: stack.url(n) for n in stack.functions()},
                "health": stack.health(),
                "store": stack.env["DAIHUO_STORE"],
                "logs": str(stack.log_dir),
            },
            indent=2,
        ),
        flush=True,
    )
    try:
        while not stopping.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
