"""The local cloud: Google's Pub/Sub emulator, optionally the GCS emulator, every function in its
own functions-framework process, the topics and subscriptions of ``infra/topology.json`` (push
subscriptions pointing at the CloudEvent functions, the archive's pull subscription, a dead-letter
topic), and a scheduler that publishes the ticks on the schedules declared there.

    python -m shared.localcloud up [--detach] [--port-base 8080] [--store local|gcs] [--every clean-hourly=20]
    python -m shared.localcloud status
    python -m shared.localcloud down

``up`` without ``--detach`` runs in the foreground until Ctrl-C; with it, a background process
holds the stack and ``down`` stops it (SIGTERM, clean shutdown). State and logs live in
``var/stack/`` (``state.json``, ``secrets.json`` with freshly generated webhook secrets,
``identity.json`` with the local viewer-token key pair and the dashboard's operator token,
``logs/<function>.log``). Ports: Pub/Sub emulator ``port_base+5``... see ``Ports``.
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
from datetime import datetime, timezone
from pathlib import Path

from shared import emulators
from shared.log import get_logger

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
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
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
    def __init__(self, *, port_base: int = 8080, store: str = "local", state_dir: Path = STATE_DIR,
                 functions: list[str] | None = None, overrides: dict[str, float] | None = None,
                 scheduler: bool = True, project: str = "daihuo-local", fresh: bool = False,
                 push_backoff_s: tuple[float, float] = (1.0, 10.0), extra_env: dict[str, str] | None = None):
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
        self.procs: dict[str, emulators.Emulator] = {}
        self.env: dict[str, str] = {}
        self.bus = None
        self.scheduler: Scheduler | None = None
        self.secrets: dict[str, str] = {}
        self.identity: dict[str, str] = {}

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
        values = {"viewer_kid": "local-1", "viewer_private": identity.b64url(priv), "viewer_public": identity.b64url(pub),
                  "operator_token": pysecrets.token_urlsafe(32)}
        path.write_text(json.dumps(values))
        path.chmod(0o600)
        return values

    def viewer_token(self, user_id: str, ttl_s: int = 600) -> str:
        from shared import identity

        ident = self.identity
        return identity.mint(identity.unb64url(ident["viewer_private"]), ident["viewer_kid"], user_id, ttl_s=ttl_s)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "Stack":
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
            if self.store_kind == "gcs":
                gcs = emulators.start_gcs(self.ports.gcs, log_dir=self.log_dir)
                self.procs["gcs-emulator"] = gcs
                self.env.update(gcs.env)
            self.env.update({"DAIHUO_STORE": self._store_url(), "PUBSUB_PROJECT_ID": self.project,
                             "GOOGLE_CLOUD_PROJECT": self.project, **self.extra_env})
            self.env.update({f"DAIHUO_SECRET_{p.upper()}": s for p, s in self.secrets.items()})
            self.env.update({"DAIHUO_VIEWER_KEYS": json.dumps({self.identity["viewer_kid"]: self.identity["viewer_public"]}),
                             "DAIHUO_OPERATOR_TOKENS": self.identity["operator_token"]})
            self._saved_env = {k: os.environ.get(k) for k in self.env}
            os.environ.update(self.env)  # this process's clients (bus, store) talk to the stack
            from shared.bus import Bus

            self.bus = Bus(self.project)
            self._declare_messaging(push=False)
            for name in self.functions():
                spec = self.topology["functions"][name]
                sig = "http" if spec["trigger"] == "http" else "cloudevent"
                self.procs[name] = emulators.start_function(
                    name, spec["entry_point"], port=self.ports.function(spec["port_offset"]), signature_type=sig,
                    env=self.env, log_dir=self.log_dir, timeout=60)
            self._declare_messaging(push=True)
            if self.use_scheduler:
                self.scheduler = Scheduler(self.bus, self.topology["schedules"], self.overrides)
                self.scheduler.start()
            self._write_state()
        except BaseException:
            self.stop()
            raise
        return self

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
            if spec["trigger"] != "topic":
                continue
            self.bus.ensure_subscription(
                f"{name}-push", spec["topic"], push_endpoint=self.url(name), ack_deadline_s=d["ack_deadline_s"],
                dead_letter_topic=d["dead_letter_topic"], max_delivery_attempts=d["max_delivery_attempts"],
                min_backoff_s=self.push_backoff_s[0], max_backoff_s=self.push_backoff_s[1])

    def _write_state(self) -> None:
        state = {"pid": os.getpid(), "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "store": self.env.get("DAIHUO_STORE"), "env": {k: v for k, v in self.env.items() if "SECRET" not in k and "TOKEN" not in k},
                 "functions": {n: self.url(n) for n in self.functions()},
                 "emulators": {n: e.host for n, e in self.procs.items() if n.endswith("emulator")},
                 "logs": str(self.log_dir)}
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
        if self.scheduler:
            self.scheduler.stop()
        for name in [n for n in self.procs if not n.endswith("emulator")] + \
                [n for n in self.procs if n.endswith("emulator")]:
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

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _parse_overrides(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, _, sec = item.partition("=")
        out[name] = float(sec)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shared.localcloud", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the local cloud")
    up.add_argument("--port-base", type=int, default=int(os.environ.get("DAIHUO_PORT_BASE", 8080)))
    up.add_argument("--store", default=os.environ.get("DAIHUO_LOCAL_STORE", "local"),
                    help="local (embedded default), gcs (the GCS emulator), or a store URL")
    up.add_argument("--every", action="append", default=[], metavar="SCHEDULE=SECONDS",
                    help="run a schedule at a fixed interval instead of its cron (e.g. clean-hourly=30)")
    up.add_argument("--detach", action="store_true", help="run in the background; stop with `down`")
    up.add_argument("--fresh", action="store_true", help="empty the local store and make new secrets")
    sub.add_parser("down", help="stop a detached local cloud")
    sub.add_parser("status", help="show what runs")
    args = ap.parse_args(argv)
    state_path = STATE_DIR / "state.json"

    if args.cmd == "status":
        if not state_path.exists():
            print("local cloud: not running")
            return 1
        state = json.loads(state_path.read_text())
        import urllib.error
        import urllib.request

        ok = True
        for name, url in state["functions"].items():
            try:
                urllib.request.urlopen(url + "__health", timeout=2).read()
                up = True
            except urllib.error.HTTPError:
                up = True  # any HTTP answer: the server is up
            except Exception:
                up = False
            ok &= up
            print(f"{name:10s} {url:28s} {'up' if up else 'DOWN'}")
        for name, host in state["emulators"].items():
            print(f"{name:10s} {host:28s}")
        print(f"store {state['store']}   logs {state['logs']}   (pid {state['pid']}, since {state['started_at']})")
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
        cmd = [sys.executable, "-m", "shared.localcloud", "up", "--port-base", str(args.port_base), "--store", args.store]
        cmd += [f"--every={e}" for e in args.every] + (["--fresh"] if args.fresh else [])
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        with open(STATE_DIR / "stack.log", "ab") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, "PYTHONPATH": str(ROOT)})
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
    print(json.dumps({"functions": {n: stack.url(n) for n in stack.functions()}, "health": stack.health(),
                      "store": stack.env["DAIHUO_STORE"], "logs": str(stack.log_dir)}, indent=2), flush=True)
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
