"""Start and stop the local cloud's emulators (used by the test fixtures and by the local stack).

* Google Cloud Storage: the pip package ``gcp-storage-emulator`` (``STORAGE_EMULATOR_HOST``).
* Pub/Sub: Google's own emulator from the Cloud SDK (a Java program; ``PUBSUB_EMULATOR_HOST``).
* Bigtable: Google's emulator from the Cloud SDK (``cbtemulator``, a Go program, in memory;
  ``BIGTABLE_EMULATOR_HOST``), for the live layer (docs/live.md).

Each emulator runs as its own process group so that stopping it also stops the children the
launcher scripts start (the Pub/Sub script execs java; gcloud wraps it once more).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

PUBSUB_INSTALL_HINT = (
    "Google's Pub/Sub emulator was not found. Install it with `gcloud components install pubsub-emulator` "
    "or, on Debian/Ubuntu with Google's apt repository, `apt-get install google-cloud-cli-pubsub-emulator` "
    "(it needs Java 11+)."
)


BIGTABLE_INSTALL_HINT = (
    "Google's Bigtable emulator was not found. Install it with `gcloud components install bigtable-emulator` "
    "or, on Debian/Ubuntu with Google's apt repository, `apt-get install google-cloud-cli-bigtable-emulator`."
)


class EmulatorError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Emulator:
    name: str
    host: str  # host:port, the value of the *_EMULATOR_HOST variable
    proc: subprocess.Popen
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=timeout)

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _wait_http(url: str, proc: subprocess.Popen, name: str, timeout: float, log_path: Path | None) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path and log_path.exists() else ""
            raise EmulatorError(f"{name} exited with code {proc.returncode} before it was ready:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                resp.read()
                return
        except Exception as exc:  # connection refused until it listens; 404 means it answers
            if getattr(exc, "code", None) is not None:
                return
            last = exc
        time.sleep(0.1)
    raise EmulatorError(f"{name} not ready at {url} after {timeout:.0f}s ({last})")


def _spawn(cmd: list[str], log_path: Path | None, env: dict[str, str] | None = None) -> subprocess.Popen:
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    finally:
        if log_path:
            out.close()


def start_gcs(port: int | None = None, log_dir: Path | None = None, timeout: float = 30.0) -> Emulator:
    """Start ``gcp-storage-emulator`` in memory on 127.0.0.1:port."""
    port = port or free_port()
    exe = shutil.which(
        "gcp-storage-emulator", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    )
    if not exe:
        raise EmulatorError("gcp-storage-emulator is not installed (pip install -r requirements.txt)")
    log_path = Path(log_dir) / "gcs-emulator.log" if log_dir else None
    proc = _spawn(
        [exe, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "--default-bucket", "daihuo-default"],
        log_path,
    )
    host = f"127.0.0.1:{port}"
    _wait_http(f"http://{host}/storage/v1/b", proc, "GCS emulator", timeout, log_path)
    return Emulator("gcs", host, proc, log_path, {"STORAGE_EMULATOR_HOST": f"http://{host}"})


def pubsub_emulator_command() -> list[str] | None:
    """The emulator's own launcher if the SDK has it, else ``gcloud beta emulators pubsub start``."""
    roots = [
        os.environ.get("CLOUDSDK_ROOT_DIR", ""),
        "/usr/lib/google-cloud-sdk",
        "/usr/share/google-cloud-sdk",
        os.path.expanduser("~/google-cloud-sdk"),
    ]
    gcloud = shutil.which("gcloud")
    if gcloud:
        roots.append(str(Path(os.path.realpath(gcloud)).parent.parent))
    for root in roots:
        exe = Path(root) / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
        if root and exe.exists():
            return [str(exe)]
    return None


def start_pubsub(
    port: int | None = None,
    project: str = "daihuo-local",
    log_dir: Path | None = None,
    data_dir: Path | None = None,
    timeout: float = 60.0,
) -> Emulator:
    """Start Google's Pub/Sub emulator on 127.0.0.1:port (needs Java)."""
    port = port or free_port()
    cmd = pubsub_emulator_command()
    if cmd is None:
        raise EmulatorError(PUBSUB_INSTALL_HINT)
    if not shutil.which("java"):
        raise EmulatorError(
            "Java is required by the Pub/Sub emulator (install a JRE 11+, e.g. openjdk-17-jre-headless)"
        )
    log_path = Path(log_dir) / "pubsub-emulator.log" if log_dir else None
    cmd = cmd + ["--host=127.0.0.1", f"--port={port}"]
    if data_dir:
        cmd.append(f"--dir={data_dir}")
    proc = _spawn(cmd, log_path, {"JAVA_TOOL_OPTIONS": os.environ.get("JAVA_TOOL_OPTIONS", "-Xms64m -Xmx512m")})
    host = f"127.0.0.1:{port}"
    _wait_http(f"http://{host}/", proc, "Pub/Sub emulator", timeout, log_path)
    return Emulator("pubsub", host, proc, log_path, {"PUBSUB_EMULATOR_HOST": host, "PUBSUB_PROJECT_ID": project})


def _sdk_roots() -> list[str]:
    roots = [
        os.environ.get("CLOUDSDK_ROOT_DIR", ""),
        "/usr/lib/google-cloud-sdk",
        "/usr/share/google-cloud-sdk",
        os.path.expanduser("~/google-cloud-sdk"),
    ]
    gcloud = shutil.which("gcloud")
    if gcloud:
        roots.append(str(Path(os.path.realpath(gcloud)).parent.parent))
    return [r for r in roots if r]


def bigtable_emulator_command() -> list[str] | None:
    """The emulator binary of the SDK component if present, else ``gcloud beta emulators bigtable start``
    when gcloud has the component (it wraps the same binary), else None."""
    for root in _sdk_roots():
        exe = Path(root) / "platform" / "bigtable-emulator" / "cbtemulator"
        if exe.exists():
            return [str(exe)]
    return None


def _wait_tcp(host: str, port: int, proc: subprocess.Popen, name: str, timeout: float, log_path: Path | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path and log_path.exists() else ""
            raise EmulatorError(f"{name} exited with code {proc.returncode} before it was ready:\n{tail}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise EmulatorError(f"{name} not listening on {host}:{port} after {timeout:.0f}s")


def start_bigtable(
    port: int | None = None, project: str = "daihuo-local", log_dir: Path | None = None, timeout: float = 30.0
) -> Emulator:
    """Start Google's Bigtable emulator (in memory) on 127.0.0.1:port. Tables are created by the
    caller (``shared.live.schema.ensure_table``); the emulator accepts any project / instance."""
    port = port or free_port()
    cmd = bigtable_emulator_command()
    if cmd is None:
        raise EmulatorError(BIGTABLE_INSTALL_HINT)
    log_path = Path(log_dir) / "bigtable-emulator.log" if log_dir else None
    proc = _spawn(cmd + ["-host", "127.0.0.1", "-port", str(port)], log_path)
    _wait_tcp("127.0.0.1", port, proc, "Bigtable emulator", timeout, log_path)
    host = f"127.0.0.1:{port}"
    return Emulator("bigtable", host, proc, log_path, {"BIGTABLE_EMULATOR_HOST": host})


REPO_ROOT = Path(__file__).resolve().parent.parent


def start_function(
    name: str,
    target: str | None = None,
    *,
    port: int | None = None,
    signature_type: str = "http",
    env: dict[str, str] | None = None,
    log_dir: Path | None = None,
    timeout: float = 30.0,
    workers: int = 1,
    threads: int | None = None,
    source: Path | None = None,
) -> Emulator:
    """Serve ``functions/<name>/main.py`` (or ``source``) with ``functions-framework`` on 127.0.0.1:port."""
    port = port or free_port()
    exe = Path(sys.executable).parent / "functions-framework"
    source = Path(source) if source else REPO_ROOT / "functions" / name / "main.py"
    if not source.exists():
        raise EmulatorError(f"no function at {source}")
    log_path = Path(log_dir) / f"{name}.log" if log_dir else None
    run_env = {
        "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "WORKERS": str(workers),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    if threads:
        run_env["THREADS"] = str(threads)
    cmd = [
        str(exe),
        "--target",
        target or name,
        "--source",
        str(source),
        "--signature-type",
        signature_type,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    proc = _spawn(cmd, log_path, run_env)
    host = f"127.0.0.1:{port}"
    _wait_http(f"http://{host}/__ready", proc, f"function {name}", timeout, log_path)
    return Emulator(name, host, proc, log_path, {})


if __name__ == "__main__":  # python -m devtools.emulators check
    if len(sys.argv) > 1 and sys.argv[1] == "check":
        ok = True
        if pubsub_emulator_command() is None:
            print(PUBSUB_INSTALL_HINT, file=sys.stderr)
            ok = False
        if not shutil.which("java"):
            print(
                "Java is missing: the Pub/Sub emulator needs a JRE 11+ (apt-get install openjdk-17-jre-headless)",
                file=sys.stderr,
            )
            ok = False
        if bigtable_emulator_command() is None:
            print(BIGTABLE_INSTALL_HINT, file=sys.stderr)
            ok = False
        sys.exit(0 if ok else 1)
    print("usage: python -m devtools.emulators check", file=sys.stderr)
    sys.exit(2)
