"""One small object-store interface, three backends: GCS, S3-compatible, local filesystem.

Everything Daihuo keeps lives in one bucket under prefixes (shared/layout.py spells them). Code talks to an
``ObjectStore`` obtained from ``open_store(url)``:

* ``gs://bucket[/prefix]``   Google Cloud Storage (``STORAGE_EMULATOR_HOST`` selects the emulator)
* ``s3://bucket[/prefix]``   S3-compatible (endpoint from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` /
                             ``S3_ENDPOINT_URL``: moto, MinIO, Alibaba OSS, Tencent COS, ...)
* ``file:///abs/path`` or a plain path: the local filesystem (the embedded default)

A ``Generation`` is an opaque string naming one written state of one object; pass it back to
``put_if_unchanged`` for compare-and-swap. GCS: the object's generation number (as a string);
S3: the ETag (quotes included); local: a per-key counter that never repeats, not even after a delete.
``ABSENT`` (``"0"``) as a precondition means "only if the object does not exist".
See docs/storage.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

__all__ = [
    "ABSENT",
    "Generation",
    "ObjectStore",
    "StorageError",
    "NotFound",
    "PreconditionFailed",
    "InvalidKey",
    "GCSStore",
    "S3Store",
    "LocalStore",
    "open_store",
    "validate_key",
    "put_json",
    "get_json",
    "get_json_with_generation",
    "update_json",
]

Generation = str
"""Opaque token for one written state of an object. Compare with ``==``, store it, pass it back."""

ABSENT: Generation = "0"
"""Precondition meaning "the object must not exist" (GCS's ``ifGenerationMatch=0``)."""

_MAX_KEY_BYTES = 1024  # GCS and S3 both limit object names to 1024 bytes of UTF-8
_RESERVED = ".daihuo"  # segments starting with this are the local backend's own files
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# ---------------------------------------------------------------------------------------- errors
class StorageError(Exception):
    """Base class of every error this module raises on purpose."""


class NotFound(StorageError, KeyError):
    """The object does not exist."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "not found"


class PreconditionFailed(StorageError):
    """A conditional write lost: the object's generation was not the expected one."""


class InvalidKey(StorageError, ValueError):
    """A key (or prefix) that this module refuses: empty, absolute, '..', control chars, ..."""


# ----------------------------------------------------------------------------------------- keys
def _check_segments(text: str, what: str, *, allow_trailing_slash: bool) -> None:
    if _CONTROL.search(text):
        raise InvalidKey(f"{what} {text!r} contains a control character")
    if "\\" in text:
        raise InvalidKey(f"{what} {text!r} contains a backslash; use '/' to separate segments")
    if text.startswith("/"):
        raise InvalidKey(f"{what} {text!r} is absolute; keys are relative to the store")
    if len(text.encode("utf-8")) > _MAX_KEY_BYTES:
        raise InvalidKey(f"{what} is longer than {_MAX_KEY_BYTES} bytes of UTF-8")
    segments = text.split("/")
    if allow_trailing_slash and segments and segments[-1] == "":
        segments = segments[:-1]
    for seg in segments:
        if seg == "":
            raise InvalidKey(f"{what} {text!r} has an empty segment ('//' or a trailing '/')")
        if seg in (".", ".."):
            raise InvalidKey(f"{what} {text!r} has a '{seg}' segment")
        if seg.startswith(_RESERVED):
            raise InvalidKey(f"{what} {text!r}: segments starting with {_RESERVED!r} are reserved")


def validate_key(key: str) -> str:
    """Return ``key`` if every backend can store it safely, else raise ``InvalidKey``.

    Rules (the same on every backend, so a key that works locally works in the cloud): a non-empty
    str of at most 1024 UTF-8 bytes, '/'-separated, not starting with '/', no empty, '.' or '..'
    segment, no control characters or backslashes, no segment starting with '.daihuo'.
    """
    if not isinstance(key, str):
        raise InvalidKey(f"key must be a str, not {type(key).__name__}")
    if not key:
        raise InvalidKey("key is empty")
    _check_segments(key, "key", allow_trailing_slash=False)
    return key


def _validate_prefix(prefix: str) -> str:
    """A listing prefix: any string that could begin a valid key ('' lists everything)."""
    if not isinstance(prefix, str):
        raise InvalidKey(f"prefix must be a str, not {type(prefix).__name__}")
    if prefix:
        # the last segment may be partial ("raw/a" matches "raw/ab"), but it cannot be '.' / '..'
        _check_segments(prefix, "prefix", allow_trailing_slash=True)
    return prefix


def _normalise_store_prefix(prefix: str) -> str:
    prefix = (prefix or "").strip("/")
    if prefix:
        validate_key(prefix)
        return prefix + "/"
    return ""


def _as_generation(gen: Any) -> Generation:
    return ABSENT if gen is None else str(gen)


# ------------------------------------------------------------------------------------ interface
@runtime_checkable
class ObjectStore(Protocol):
    url: str

    def put(
        self, key: str, data: bytes, *, content_type: str | None = None, if_generation_match: Generation | None = None
    ) -> Generation: ...
    def get(self, key: str) -> bytes: ...
    def get_with_generation(self, key: str) -> tuple[bytes, Generation]: ...
    def generation(self, key: str) -> Generation | None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> Iterator[str]: ...
    def delete(self, key: str) -> None: ...
    def local_path(self, key: str, cache_dir: str) -> str: ...
    def put_if_unchanged(
        self, key: str, data: bytes, expected: Generation | None, *, content_type: str | None = None
    ) -> Generation: ...


class _BaseStore:
    """Shared behaviour: key validation, the store prefix, derived operations, JSON helpers."""

    url: str
    prefix: str  # "" or "some/prefix/"

    # -- to implement: all take FULL (prefixed, validated) names
    def _put(self, name: str, data: bytes, content_type: str | None, match: Generation | None) -> Generation:
        raise NotImplementedError

    def _get(self, name: str) -> tuple[bytes, Generation]:
        raise NotImplementedError

    def _generation(self, name: str) -> Generation | None:
        raise NotImplementedError

    def _list(self, prefix: str) -> Iterator[str]:
        raise NotImplementedError

    def _delete(self, name: str) -> None:
        raise NotImplementedError

    # -- public API
    def _name(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def put(
        self, key: str, data: bytes, *, content_type: str | None = None, if_generation_match: Generation | None = None
    ) -> Generation:
        """Write ``data``; return the new generation.

        ``if_generation_match=None``: unconditional. ``ABSENT`` (or ``0``): only if the object does
        not exist. Otherwise: only if the current generation equals it. A lost condition raises
        ``PreconditionFailed`` and writes nothing.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        match = None if if_generation_match is None else _as_generation(if_generation_match)
        return self._put(self._name(key), bytes(data), content_type, match)

    def put_if_unchanged(
        self, key: str, data: bytes, expected: Generation | None, *, content_type: str | None = None
    ) -> Generation:
        """Compare-and-swap: write only if the generation is still ``expected`` (None = absent)."""
        return self.put(key, data, content_type=content_type, if_generation_match=_as_generation(expected))

    def get(self, key: str) -> bytes:
        """The object's bytes; ``NotFound`` if it does not exist."""
        return self._get(self._name(key))[0]

    def get_with_generation(self, key: str) -> tuple[bytes, Generation]:
        """The bytes and the generation they belong to (consistent pair), for read-modify-write."""
        return self._get(self._name(key))

    def generation(self, key: str) -> Generation | None:
        """The current generation, or None if the object does not exist."""
        return self._generation(self._name(key))

    def exists(self, key: str) -> bool:
        return self.generation(key) is not None

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys starting with ``prefix`` (plain string match), sorted by code point / UTF-8 bytes.

        ``"raw/a/"`` lists only below ``raw/a``; ``"raw/a"`` also matches ``raw/ab...``. Keys are
        returned without the store's own prefix.
        """
        full = self.prefix + _validate_prefix(prefix)  # validated now, not at first next()
        cut = len(self.prefix)
        return (name[cut:] for name in self._list(full))

    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing object is not an error."""
        self._delete(self._name(key))

    def local_path(self, key: str, cache_dir: str) -> str:
        """A filesystem path holding the object's bytes, for engines that read files (DuckDB,
        pyarrow): a download into ``cache_dir`` (named by a hash of the key; an earlier download of
        the same key there is reused, so give each run its own directory). ``LocalStore`` returns
        the object's own file instead (no copy: read it, never write to it). NotFound if absent."""
        path = os.path.join(cache_dir, hashlib.sha1(key.encode()).hexdigest() + os.path.splitext(key)[1])
        if not os.path.exists(path):
            data = self.get(key)
            os.makedirs(cache_dir, exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        return path

    # JSON convenience (also available as module functions)
    def put_json(self, key: str, obj: Any, *, if_generation_match: Generation | None = None) -> Generation:
        return put_json(self, key, obj, if_generation_match=if_generation_match)

    def get_json(self, key: str) -> Any:
        return get_json(self, key)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


# ------------------------------------------------------------------------------------ JSON helpers
def _dump_json(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def put_json(store: ObjectStore, key: str, obj: Any, *, if_generation_match: Generation | None = None) -> Generation:
    """Write ``obj`` as UTF-8 JSON (sorted keys, compact); same precondition rules as ``put``."""
    return store.put(key, _dump_json(obj), content_type="application/json", if_generation_match=if_generation_match)


def get_json(store: ObjectStore, key: str) -> Any:
    return json.loads(store.get(key).decode("utf-8"))


def get_json_with_generation(store: ObjectStore, key: str) -> tuple[Any, Generation]:
    data, gen = store.get_with_generation(key)
    return json.loads(data.decode("utf-8")), gen


_NO_DEFAULT = object()


def update_json(
    store: ObjectStore,
    key: str,
    fn: Callable[[Any], Any],
    *,
    default: Any = _NO_DEFAULT,
    max_attempts: int = 50,
    backoff: float = 0.005,
) -> tuple[Any, Generation]:
    """Read-modify-write a JSON object with compare-and-swap, retrying when another writer won.

    ``fn`` gets the current value (``default`` if the object is absent; without a default a missing
    object raises ``NotFound``) and returns the new value; it may be called several times, so it must
    not have side effects. Returns ``(new_value, new_generation)``. After ``max_attempts`` lost races
    the last ``PreconditionFailed`` is raised.
    """
    last: PreconditionFailed | None = None
    for attempt in range(max_attempts):
        try:
            current, gen = get_json_with_generation(store, key)
        except NotFound:
            if default is _NO_DEFAULT:
                raise
            current, gen = json.loads(_dump_json(default)), None  # a fresh copy for fn to mutate
        new = fn(current)
        try:
            return new, store.put_if_unchanged(key, _dump_json(new), gen, content_type="application/json")
        except PreconditionFailed as exc:
            last = exc
            time.sleep(random.uniform(0, backoff * min(2**attempt, 64)))
    assert last is not None
    raise last


# ------------------------------------------------------------------------------------------ GCS
_gcs_clients: dict[tuple[str | None, str | None], Any] = {}
_gcs_lock = threading.Lock()


def gcs_client(project: str | None = None):
    """The process's shared ``google.cloud.storage.Client`` (created on first use).

    With ``STORAGE_EMULATOR_HOST`` set: anonymous credentials and project ``project`` /
    ``GOOGLE_CLOUD_PROJECT`` / "daihuo-local". Otherwise Application Default Credentials.
    """
    emulator = os.environ.get("STORAGE_EMULATOR_HOST") or None
    project = project or os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("GCLOUD_PROJECT")
    cache_key = (emulator, project)
    client = _gcs_clients.get(cache_key)
    if client is None:
        with _gcs_lock:
            client = _gcs_clients.get(cache_key)
            if client is None:
                from google.cloud import storage

                if emulator:
                    from google.auth.credentials import AnonymousCredentials

                    client = storage.Client(project=project or "daihuo-local", credentials=AnonymousCredentials())
                else:
                    client = storage.Client(project=project)
                _gcs_clients[cache_key] = client
    return client


class GCSStore(_BaseStore):
    """Google Cloud Storage through ``google-cloud-storage``.

    Generation = the object's generation number as a decimal string. Preconditions are sent as
    ``ifGenerationMatch`` (0 = must not exist). The pip ``gcp-storage-emulator`` ignores them.
    """

    def __init__(self, bucket: str, prefix: str = "", *, client=None, project: str | None = None):
        if not bucket:
            raise ValueError("GCS bucket name is empty")
        self.bucket_name = bucket
        self.prefix = _normalise_store_prefix(prefix)
        self.url = f"gs://{bucket}/{self.prefix}".rstrip("/")
        self._client = client
        self._project = project
        self._bucket = None

    @property
    def client(self):
        if self._client is None:
            self._client = gcs_client(self._project)
        return self._client

    @property
    def bucket(self):
        if self._bucket is None:
            self._bucket = self.client.bucket(self.bucket_name)
        return self._bucket

    @staticmethod
    def _exc():
        from google.api_core import exceptions

        return exceptions

    def _put(self, name, data, content_type, match):
        ex = self._exc()
        blob = self.bucket.blob(name)
        kwargs = {}
        if match is not None:
            if not match.isdigit():  # e.g. an ETag from another backend: can never match here
                raise PreconditionFailed(f"{self.url}: {name!r}: {match!r} is not a GCS generation")
            kwargs["if_generation_match"] = int(match)
        try:
            blob.upload_from_string(data, content_type=content_type or "application/octet-stream", **kwargs)
        except ex.PreconditionFailed as exc:
            raise PreconditionFailed(f"{self.url}: {name!r} changed (expected generation {match})") from exc
        except ex.GoogleAPICallError as exc:
            raise StorageError(f"{self.url}: put {name!r}: {exc}") from exc
        return str(blob.generation)

    def _get(self, name):
        ex = self._exc()
        for _ in range(5):
            blob = self.bucket.get_blob(name)
            if blob is None:
                raise NotFound(f"{self.url}: {name!r} does not exist")
            try:
                # pin the download to the generation we just saw: bytes and generation stay a pair
                gen = blob.generation  # read it first: the download refreshes it from response headers
                return blob.download_as_bytes(if_generation_match=gen), str(gen)
            except (ex.PreconditionFailed, ex.NotFound):
                continue  # overwritten or deleted between metadata and download: look again
        raise StorageError(f"{self.url}: {name!r} kept changing while being read")

    def get(self, key: str) -> bytes:
        ex = self._exc()
        name = self._name(key)
        try:
            return self.bucket.blob(name).download_as_bytes()
        except ex.NotFound as exc:
            raise NotFound(f"{self.url}: {name!r} does not exist") from exc

    def _generation(self, name):
        blob = self.bucket.get_blob(name)
        return None if blob is None else str(blob.generation)

    def _list(self, prefix):
        for blob in self.client.list_blobs(self.bucket_name, prefix=prefix or None):
            yield blob.name

    def _delete(self, name):
        ex = self._exc()
        try:
            self.bucket.blob(name).delete()
        except ex.NotFound:
            pass


# ------------------------------------------------------------------------------------------- S3
def s3_endpoint_url() -> str | None:
    """``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``, else ``S3_ENDPOINT_URL``, else None (AWS)."""
    for var in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "S3_ENDPOINT_URL"):
        if os.environ.get(var):
            return os.environ[var]
    return None


class S3Store(_BaseStore):
    """S3-compatible storage through ``boto3``.

    Generation = the ETag, quotes included (for single-part uploads the MD5 of the content, so two
    writes of identical bytes share a generation: compare-and-swap compares content, which is what a
    read-modify-write needs). Create-only sends ``If-None-Match: *``; swap sends ``If-Match: <etag>``.
    """

    _PRECONDITION_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
    _MISSING_CODES = {"NoSuchKey", "404", "NotFound"}

    def __init__(self, bucket: str, prefix: str = "", *, client=None, endpoint_url: str | None = None):
        if not bucket:
            raise ValueError("S3 bucket name is empty")
        self.bucket_name = bucket
        self.prefix = _normalise_store_prefix(prefix)
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._client = client
        self._endpoint_url = endpoint_url
        self._lock = threading.Lock()

    @property
    def client(self):
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import boto3
                    from botocore.config import Config

                    style = os.environ.get("S3_ADDRESSING_STYLE") or "auto"
                    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
                    self._client = boto3.session.Session().client(
                        "s3",
                        endpoint_url=self._endpoint_url or s3_endpoint_url(),
                        region_name=region,
                        config=Config(s3={"addressing_style": style}, retries={"max_attempts": 3, "mode": "standard"}),
                    )
        return self._client

    @staticmethod
    def _code(exc) -> tuple[str, int]:
        resp = getattr(exc, "response", {}) or {}
        return str(resp.get("Error", {}).get("Code", "")), int(
            resp.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        )

    def _put(self, name, data, content_type, match):
        from botocore.exceptions import ClientError

        kwargs: dict[str, Any] = {"Bucket": self.bucket_name, "Key": name, "Body": data}
        if content_type:
            kwargs["ContentType"] = content_type
        if match == ABSENT:
            kwargs["IfNoneMatch"] = "*"
        elif match is not None:
            kwargs["IfMatch"] = match
        try:
            resp = self.client.put_object(**kwargs)
        except ClientError as exc:
            code, status = self._code(exc)
            if code in self._PRECONDITION_CODES or status in (409, 412):
                raise PreconditionFailed(f"{self.url}: {name!r} changed (expected {match}): {code}") from exc
            if match is not None and (code in self._MISSING_CODES or status == 404):
                # If-Match on an object that no longer exists
                raise PreconditionFailed(f"{self.url}: {name!r} is gone (expected {match})") from exc
            raise StorageError(f"{self.url}: put {name!r}: {exc}") from exc
        return resp["ETag"]

    def _get(self, name):
        from botocore.exceptions import ClientError

        try:
            resp = self.client.get_object(Bucket=self.bucket_name, Key=name)
        except ClientError as exc:
            code, status = self._code(exc)
            if code in self._MISSING_CODES or status == 404:
                raise NotFound(f"{self.url}: {name!r} does not exist") from exc
            raise StorageError(f"{self.url}: get {name!r}: {exc}") from exc
        with resp["Body"] as body:
            return body.read(), resp["ETag"]

    def _generation(self, name):
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket_name, Key=name)["ETag"]
        except ClientError as exc:
            code, status = self._code(exc)
            if code in self._MISSING_CODES or status == 404:
                return None
            raise StorageError(f"{self.url}: head {name!r}: {exc}") from exc

    def _list(self, prefix):
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket_name, Prefix=prefix):
            for obj in page.get("Contents", ()):
                yield obj["Key"]

    def _delete(self, name):
        self.client.delete_object(Bucket=self.bucket_name, Key=name)  # S3 DELETE is idempotent


# ---------------------------------------------------------------------------------------- local
try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class _KeyLock:
    """An ``flock`` on a per-key lock file: excludes other threads AND other processes."""

    def __init__(self, path: str, exclusive: bool):
        self.path = path
        self.mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        self.fd = -1

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # each open = own lock owner
        try:
            fcntl.flock(self.fd, self.mode)
        except BaseException:
            os.close(self.fd)
            raise
        return self

    def __exit__(self, *exc):
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)


class LocalStore(_BaseStore):
    """Objects as plain files under ``root`` (``root/raw/date=.../x.ndjson.gz``).

    * Writes are atomic: a temp file in the same directory, fsync, ``os.replace``.
    * Generation = a per-key counter in ``root/.daihuo/<h[:2]>/<h>.gen`` (h = sha256 of the key),
      incremented by every write and kept after a delete, so a generation is never reused (no ABA).
      It is written before the data, under an exclusive ``flock`` on ``.../<h>.lock``; readers of (bytes, generation)
      take the shared lock. Compare-and-swap is therefore atomic across threads and processes on
      one machine (POSIX, a local filesystem; not across hosts on NFS).
    * ``content_type`` is not stored.
    * A key cannot be both an object and a "directory" (``a`` and ``a/b``): that raises StorageError.
    """

    def __init__(self, root: str | os.PathLike, prefix: str = ""):
        if fcntl is None:  # pragma: no cover
            raise StorageError("the local store needs fcntl.flock (POSIX)")
        self.root = os.path.abspath(os.path.expanduser(os.fspath(root)))
        self.prefix = _normalise_store_prefix(prefix)
        self.url = "file://" + self.root + ("/" + self.prefix.rstrip("/") if self.prefix else "")
        self._meta = os.path.join(self.root, _RESERVED)

    # paths ------------------------------------------------------------------------------------
    def _path(self, base: str, name: str, suffix: str = "") -> str:
        path = os.path.join(base, *name.split("/")) + suffix
        if os.path.commonpath([self.root, os.path.abspath(path)]) != self.root:  # belt and braces
            raise InvalidKey(f"key {name!r} escapes the store root")
        return path

    def _data_path(self, name: str) -> str:
        return self._path(self.root, name)

    def local_path(self, key: str, cache_dir: str) -> str:
        """The object's own file (no copy; ``cache_dir`` is not used). Read it, never write to it:
        a later ``put`` replaces the file atomically, so an open handle keeps the old bytes."""
        path = self._data_path(self._name(key))
        if not os.path.isfile(path):
            raise NotFound(f"{self.url}: {key!r} does not exist")
        return path

    def _meta_path(self, name: str, suffix: str) -> str:
        # metadata is keyed by a hash of the name: no file/directory clashes between "a" and "a/b",
        # no length limits, and it survives deletes (which is what keeps generations unique)
        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()
        return os.path.join(self._meta, digest[:2], digest + suffix)

    def _gen_path(self, name: str) -> str:
        return self._meta_path(name, ".gen")

    def _lock(self, name: str, exclusive: bool) -> _KeyLock:
        return _KeyLock(self._meta_path(name, ".lock"), exclusive)

    # atomic file helpers ----------------------------------------------------------------------
    def _make_parent(self, path: str, name: str) -> None:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise StorageError(
                f"{self.url}: cannot store {name!r}: one of its parent segments is an object "
                "(the local store cannot hold both 'a' and 'a/b')"
            ) from exc
        if os.path.isdir(path):
            raise StorageError(
                f"{self.url}: cannot store {name!r}: other keys live below it "
                "(the local store cannot hold both 'a' and 'a/b')"
            )

    def _write_atomic(self, path: str, data: bytes, name: str) -> None:
        self._make_parent(path, name)
        directory = os.path.dirname(path)
        fd, tmp = tempfile.mkstemp(prefix=_RESERVED + "-tmp-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def _read_counter(self, name: str) -> int:
        try:
            with open(self._gen_path(name), "rb") as fh:
                return int(fh.read().strip() or 0)
        except (FileNotFoundError, NotADirectoryError):
            return 0

    def _current(self, name: str) -> Generation | None:
        """Generation of the object, or None if absent. Call with the key's lock held."""
        if not os.path.isfile(self._data_path(name)):
            return None
        return str(self._read_counter(name))

    # operations -------------------------------------------------------------------------------
    def _put(self, name, data, content_type, match):
        path = self._data_path(name)
        with self._lock(name, exclusive=True):
            current = self._current(name)
            if match is not None:
                wanted = None if match == ABSENT else match
                if current != wanted:
                    raise PreconditionFailed(
                        f"{self.url}: {name!r} is at generation {current}, expected {wanted or 'absent'}"
                    )
            self._make_parent(path, name)  # refuse file/directory clashes before touching anything
            new = self._read_counter(name) + 1
            # generation first, then data: a crash in between leaves (old data, new gen), which
            # makes stale swaps fail instead of letting them overwrite
            self._write_atomic(self._gen_path(name), str(new).encode(), name)
            self._write_atomic(path, data, name)
            return str(new)

    def _get(self, name):
        with self._lock(name, exclusive=False):
            try:
                with open(self._data_path(name), "rb") as fh:
                    data = fh.read()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
                raise NotFound(f"{self.url}: {name!r} does not exist") from exc
            return data, str(self._read_counter(name))

    def get(self, key: str) -> bytes:
        name = self._name(key)
        try:  # no lock needed: os.replace makes every read see one whole version
            with open(self._data_path(name), "rb") as fh:
                return fh.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise NotFound(f"{self.url}: {name!r} does not exist") from exc

    def _generation(self, name):
        with self._lock(name, exclusive=False):
            return self._current(name)

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._data_path(self._name(key)))

    def _list(self, prefix):
        # walk only the directory the prefix names, then filter by plain string match
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = os.path.join(self.root, *head.split("/")) if head else self.root
        found = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(_RESERVED)]
            rel = os.path.relpath(dirpath, self.root)
            base = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for fn in filenames:
                if fn.startswith(_RESERVED):
                    continue
                name = base + fn
                if name.startswith(prefix):
                    found.append(name)
        found.sort()
        return iter(found)

    def _delete(self, name):
        with self._lock(name, exclusive=True):
            try:
                os.unlink(self._data_path(name))
            except (FileNotFoundError, NotADirectoryError):
                pass
            except IsADirectoryError:
                pass  # only keys below it; there is no object of that name
            # the generation counter stays, so a re-created object gets a fresh generation


# ------------------------------------------------------------------------------------- open_store
def open_store(url: str | os.PathLike) -> ObjectStore:
    """Open a store from a URL.

    ``gs://bucket[/prefix]``, ``s3://bucket[/prefix]``, ``file:///abs/path`` (or
    ``file://localhost/abs/path``), or a plain filesystem path (relative paths are made absolute).
    """
    if isinstance(url, os.PathLike):
        return LocalStore(url)
    if not isinstance(url, str) or not url:
        raise ValueError("store URL is empty")
    if "://" not in url:
        return LocalStore(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if parts.query or parts.fragment:
        raise ValueError(f"store URL {url!r}: query and fragment are not supported")
    if scheme in ("gs", "s3"):
        if not parts.netloc:
            raise ValueError(f"store URL {url!r} has no bucket")
        prefix = unquote(parts.path).strip("/")
        return GCSStore(parts.netloc, prefix) if scheme == "gs" else S3Store(parts.netloc, prefix)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"store URL {url!r}: file URLs must be file:///absolute/path")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise ValueError(f"store URL {url!r}: file URLs must be file:///absolute/path")
        return LocalStore(path)
    raise ValueError(f"store URL {url!r}: unsupported scheme {scheme!r} (gs://, s3://, file:// or a path)")
