"""Heads from the Hugging Face Hub by repo id, downloading only what the probe reads.

``ORG/NAME`` (optionally ``ORG/NAME@REVISION``, and ``ORG/NAME[@REVISION]/PATH/FILE`` to pick
one file, e.g. a GGUF quantisation) is resolved through ``huggingface_hub``: its cache first,
the network only where its own settings allow (``HF_HUB_OFFLINE``, ``HF_HUB_CACHE``,
``HF_TOKEN``). For a sharded checkpoint only the index and the shard that holds the head (the
tensor :func:`superkern.probe.names.resolve_tensor` picks) are fetched, plus the small files
the probe reads beside the weights: ``config.json`` (tying) and ``tokenizer.json`` or
``vocab.txt`` (token strings, ``--corpus``). Without a file named: the safetensors index, else
``model.safetensors``, else ``pytorch_model.bin.index.json``, else ``pytorch_model.bin``; a
GGUF repo must name its file. Every failure is one ValueError / OSError line naming the repo.
"""
from __future__ import annotations

import os
import posixpath
import re
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Optional

from superkern.probe.names import EMBEDDING_PATTERNS, HEAD_PATTERNS, names_match, resolve_tensor

CANDIDATES = ("model.safetensors.index.json", "model.safetensors",
              "pytorch_model.bin.index.json", "pytorch_model.bin")
_FILE_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".npy", ".json")
_PART = re.compile(r"^[A-Za-z0-9_.-]{1,96}$")
_HASH = re.compile(r"^[0-9a-f]{40}$")
_SPLIT = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
_LOGIN = "log in with `hf auth login` (`huggingface-cli login` in older versions) or set HF_TOKEN"


@dataclass(frozen=True)
class HubRef:
    """A parsed ``ORG/NAME[@REVISION][/FILE]``."""

    repo_id: str
    revision: Optional[str]  # None: the Hub's default branch (main)
    filename: Optional[str]  # a file inside the repo, None: found automatically
    text: str

    @property
    def label(self) -> str:
        return f"{self.repo_id}@{self.revision or 'main'}"


def _valid_part(part: str) -> bool:
    return bool(_PART.match(part)) and part[0] not in "-." and part[-1] not in "-." \
        and "--" not in part and ".." not in part


def parse_repo_ref(text: Any) -> Optional[HubRef]:
    """The repo reference ``text`` spells, or None when it does not look like one (the caller
    checks first that no local path of that name exists: a local path always wins, and when
    a local folder ``ORG/NAME`` exists, ``ORG/NAME/FILE`` is a missing file in it)."""
    if not isinstance(text, str):  # a Path / os.PathLike always means the local file system
        return None
    s = text.strip()
    if not s or s.startswith((".", "/", "~", "-")) or any(c in s for c in "\\:*?<>|") \
            or s.endswith("/") or "//" in s:
        return None
    parts = s.split("/")
    if len(parts) < 2:
        return None
    org, name, rest = parts[0], parts[1], parts[2:]
    revision = None
    if "@" in name:
        name, revision = name.split("@", 1)
        if revision == "refs" and len(rest) >= 2:  # refs/pr/1, refs/convert/parquet
            revision, rest = "/".join(["refs", *rest[:2]]), rest[2:]
        if not revision:
            return None
    filename = "/".join(rest) or None
    if filename is not None and ("@" in filename or not filename.lower().endswith(_FILE_SUFFIXES)):
        return None
    if filename is None and name.lower().endswith(_FILE_SUFFIXES):
        return None  # "folder/x.safetensors": a missing local file, not a repo
    if not (_valid_part(org) and _valid_part(name)):
        return None
    if os.path.exists(org):  # "runs/exp1", "runs/exp1/x.pt": a mistyped local path
        return None
    return HubRef(f"{org}/{name}", revision, filename, s)


def _line(exc: BaseException) -> str:
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _join(folder: str, name: str) -> str:
    return posixpath.join(folder, name) if folder else name


class _Repo:
    """One repo at one revision: fetches through ``hf_hub_download`` (cache first), pinned to
    the commit of the first file fetched so that every file lands in one snapshot folder."""

    def __init__(self, ref: HubRef) -> None:
        try:
            from huggingface_hub import constants
        except ImportError:
            raise ValueError(f"{ref.text}: no such local file or folder; as a Hugging Face Hub "
                             "repo id it needs the huggingface_hub package (pip install "
                             "huggingface_hub)") from None
        self.ref, self.label = ref, ref.label
        self.offline = bool(constants.HF_HUB_OFFLINE)
        rev = ref.revision
        self.commit: Optional[str] = rev if rev and _HASH.match(rev) else None
        self.fetched: dict[str, Path] = {}

    def _download(self, filename: str, local_only: bool) -> str:
        from huggingface_hub import hf_hub_download

        from huggingface_hub import constants

        # cache_dir given: older huggingface_hub versions copy the constant at import time
        return hf_hub_download(self.ref.repo_id, filename, revision=self.commit or
                               self.ref.revision, local_files_only=local_only,
                               cache_dir=constants.HF_HUB_CACHE)

    def _got(self, path: str, filename: str) -> Path:
        p = Path(path)
        if self.commit is None:  # .../snapshots/<commit>/<filename>
            snap = p
            for _ in PurePosixPath(filename).parts:
                snap = snap.parent
            if snap.parent.name == "snapshots" and _HASH.match(snap.name):
                self.commit = snap.name
        self.fetched[filename] = p
        return p

    def cached(self, filename: str) -> Optional[Path]:
        from huggingface_hub.utils import LocalEntryNotFoundError

        try:
            return self._got(self._download(filename, True), filename)
        except LocalEntryNotFoundError:
            return None
        except ValueError as exc:  # a malformed revision
            raise ValueError(f"{self.label}: {_line(exc)}") from None

    def _hub(self, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` with the Hub's errors as one line each; None when the file does not exist."""
        from huggingface_hub.utils import (EntryNotFoundError, GatedRepoError,
                                           LocalEntryNotFoundError, RepositoryNotFoundError,
                                           RevisionNotFoundError)

        repo = self.ref.repo_id
        try:
            return fn()
        except LocalEntryNotFoundError as exc:  # the network failed and the cache has nothing
            cause = exc.__cause__ or exc.__context__
            raise OSError(f"{self.label}: cannot reach the Hugging Face Hub for {what} "
                          f"({_line(cause or exc)}) and it is not in the local cache; check "
                          "the connection or proxy (without one, set HF_HUB_OFFLINE=1), or "
                          f"pass a local path (there is no local {self.ref.text!r})") from None
        except EntryNotFoundError:
            return None
        except GatedRepoError:
            raise PermissionError(f"{repo}: a gated Hugging Face Hub repo: accept its "
                                  f"conditions on its Hub page, then {_LOGIN}") from None
        except RepositoryNotFoundError:
            raise FileNotFoundError(f"{repo}: no such Hugging Face Hub repo, and no local file "
                                    f"or folder of that name (a private repo: {_LOGIN})"
                                    ) from None
        except RevisionNotFoundError:
            raise FileNotFoundError(f"{self.label}: no revision {self.ref.revision!r} (branch, "
                                    f"tag or commit) in Hugging Face Hub repo {repo}") from None
        except ValueError as exc:
            raise ValueError(f"{self.label}: {what}: {_line(exc)}") from None
        except (TypeError, AttributeError):
            raise  # a change in huggingface_hub's API: a bug to see, not a network failure
        except Exception as exc:  # noqa: BLE001 - HTTP client errors are not all OSError
            raise OSError(f"{self.label}: fetching {what} from the Hugging Face Hub failed "
                          f"({_line(exc)}; there is no local {self.ref.text!r})") from None

    def get(self, filename: str, what: str = "", optional: bool = False) -> Optional[Path]:
        """The local path of ``filename``: the cache, else a download (when not offline);
        None when the repo has no such file or (offline) the cache lacks it. ``optional``:
        any failure is None (a missing tokenizer must not stop the probe)."""
        path = self.cached(filename)
        if path is None and not self.offline and not self._known_missing(filename):
            try:
                got = self._hub(what or filename, lambda: self._download(filename, False))
            except (OSError, ValueError):
                if not optional:
                    raise
                got = None
            path = None if got is None else self._got(got, filename)
        return path

    def _known_missing(self, filename: str) -> bool:
        """The cache records that the pinned commit has no such file (asked before)."""
        import huggingface_hub as hf

        marker = getattr(hf, "_CACHED_NO_EXIST", None)
        return self.commit is not None and marker is not None and \
            hf.try_to_load_from_cache(self.ref.repo_id, filename, revision=self.commit,
                                      cache_dir=hf.constants.HF_HUB_CACHE) is marker

    def need(self, filename: str, what: str) -> Path:
        path = self.get(filename, what)
        if path is not None:
            return path
        if self.offline:
            raise self.offline_error(f"{what} ({filename})")
        raise FileNotFoundError(f"{self.label}: Hugging Face Hub repo has no file {filename!r} "
                                f"({what})")

    def offline_error(self, what: str, verb: str = "is") -> FileNotFoundError:
        return FileNotFoundError(
            f"{self.label}: {what} {verb} not in the local Hugging Face Hub cache, and "
            "huggingface_hub is offline (HF_HUB_OFFLINE=1); run once online (HF_HUB_OFFLINE=0 "
            f"or unset) to download, or pass a local path (there is no local {self.ref.text!r})")

    def files(self) -> list[str]:
        """The repo's files: listed by the Hub, or (offline) those of this revision's cached
        snapshot; [] when unknown."""
        if not self.offline:
            from huggingface_hub import list_repo_files

            rev = self.commit or self.ref.revision
            return list(self._hub("the file list", lambda: list_repo_files(
                self.ref.repo_id, revision=rev)) or [])
        from huggingface_hub import constants, scan_cache_dir

        try:
            info = scan_cache_dir(constants.HF_HUB_CACHE)
        except Exception:  # noqa: BLE001 - no cache folder, unreadable cache: nothing listed
            return []
        want = self.ref.revision or "main"
        for repo in info.repos:
            if repo.repo_id != self.ref.repo_id or repo.repo_type != "model":
                continue
            for rev in repo.revisions:
                if (rev.commit_hash == self.commit) if self.commit else (want in rev.refs):
                    return sorted(f.file_path.relative_to(rev.snapshot_path).as_posix()
                                  for f in rev.files)
        return []


def _find_weights(repo: _Repo) -> tuple[str, Path]:
    """No file named: the first of :data:`CANDIDATES` in the cache, else on the Hub."""
    for name in CANDIDATES:
        path = repo.cached(name)
        if path is not None:
            return name, path
    files = repo.files()
    if not repo.offline:
        for name in CANDIDATES:
            if name in files or not files:  # listing empty: try each name
                path = repo.get(name, "the weights")
                if path is not None:
                    return name, path
    ggufs = sorted(f for f in files if f.lower().endswith(".gguf"))
    if ggufs:
        shown = ", ".join(ggufs[:12]) + (f", ... ({len(ggufs)} in all)" if len(ggufs) > 12
                                         else "")
        raise ValueError(f"{repo.label}: a GGUF repo (one file per quantisation): name the "
                         f"file, e.g. {repo.ref.repo_id}/{ggufs[0]}; .gguf files"
                         f"{' in the cache' if repo.offline else ''}: {shown}")
    if repo.offline:
        raise repo.offline_error(f"the weights (any of {', '.join(CANDIDATES)})", "are")
    weights = [f for f in files if f.lower().endswith(_FILE_SUFFIXES[:-1])]
    raise ValueError(f"{repo.label}: no {', '.join(CANDIDATES)} in the Hugging Face Hub repo; "
                     f"name a weights file as {repo.ref.repo_id}/FILE (a GGUF repo: "
                     f"{repo.ref.repo_id}/FILE.gguf)" + (f"; weight files: {weights[:12]}"
                                                         if weights else ""))


def _head_shard(repo: _Repo, index_name: str, index: Path, tensor: Optional[str]) -> None:
    """Fetch the one shard of a sharded checkpoint that holds the head."""
    from superkern.probe.loaders import read_weight_map

    try:
        wmap = read_weight_map(index)
    except ValueError as exc:
        raise ValueError(f"{repo.label}: {index_name}: {exc}") from None
    names = list(wmap)
    where = f"{repo.label}: {index_name}"
    if not names_match(names, tensor):
        wanted = repr(tensor) if tensor else ", ".join(HEAD_PATTERNS[:2] + EMBEDDING_PATTERNS[:2])
        raise ValueError(f"{where}: no LM head or token embedding among {len(names)} tensors "
                         f"(looked for {wanted}, ...); pass tensor= (CLI: --tensor NAME); "
                         f"tensors: {names[:20]}" + (" ..." if len(names) > 20 else ""))

    def no_shape(_name: str) -> tuple[int, ...]:
        raise LookupError("shards are not downloaded to list shapes")

    name, _ = resolve_tensor(names, tensor, where, no_shape)  # ambiguous names: an error
    parts = wmap[name].split("/")
    if wmap[name].startswith("/") or "\\" in wmap[name] or any(p in ("", ".", "..")
                                                                for p in parts):
        raise ValueError(f"{where}: the shard of {name!r} is {wmap[name]!r}, not a plain "
                         "file name inside the repo")
    shard = _join(posixpath.dirname(index_name), wmap[name])
    path = repo.need(shard, f"the shard holding {name!r}")
    if path.parent != index.parent:
        raise OSError(f"{repo.label}: {shard} and {index_name} are not in one snapshot folder "
                      f"({path.parent} vs {index.parent})")


def _gguf_parts(repo: _Repo, filename: str) -> Path:
    """A GGUF file, or every file of a split one (the loader opens the whole set)."""
    first = repo.need(filename, "the GGUF file")
    m = _SPLIT.match(PurePosixPath(filename).name)
    if m is not None and int(m["count"]) > 1:
        folder = posixpath.dirname(filename)
        for i in range(1, int(m["count"]) + 1):
            repo.need(_join(folder, f"{m['prefix']}-{i:05d}-of-{m['count']}.gguf"),
                      f"part {i} of the split GGUF model")
    return first


def _fetch(repo: _Repo, filename: str, path: Optional[Path], tensor: Optional[str]) -> Path:
    """Everything the loader reads for ``filename``; its local path."""
    low = filename.lower()
    if low.endswith(".gguf"):
        return _gguf_parts(repo, filename)  # the tokenizer and vocabulary are inside
    path = path or repo.need(filename, "the weights file")
    if low.endswith(".json"):
        _head_shard(repo, filename, path, tensor)
    folder = posixpath.dirname(filename)
    if not low.endswith(".npy"):
        repo.get(_join(folder, "config.json"), optional=True)
    if repo.get(_join(folder, "tokenizer.json"), optional=True) is None:
        repo.get(_join(folder, "vocab.txt"), optional=True)
    return path


def load_hub_head(ref: HubRef, tensor: Optional[str] = None):
    """Load the head of a Hub repo (see the module docstring) as a :class:`Head`.

    Raises:
        FileNotFoundError: not in the cache while offline, no such repo / revision / file.
        PermissionError: a gated repo without access.
        ValueError: a GGUF repo without a file named, no weights file, no head tensor.
        OSError: the Hub cannot be reached (and the cache lacks the file), other failures.
    """
    from superkern.probe.loaders import load_head

    t0 = time.perf_counter()
    repo = _Repo(ref)
    filename, path = (ref.filename, None) if ref.filename else _find_weights(repo)
    local = _fetch(repo, filename, path, tensor)
    try:
        head = load_head(str(local), tensor)
    except FileNotFoundError as exc:  # the message names the repo as well as the local file
        raise FileNotFoundError(f"{repo.label}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{repo.label}: {exc}") from None
    except OSError as exc:
        raise OSError(f"{repo.label}: {exc}") from None
    by_path = {str(p): f for f, p in repo.fetched.items()}
    read = by_path.get(head.source, Path(head.source).name)
    commit = repo.commit or "unknown"
    head.source = f"{repo.label}:{read} (commit {commit}; {head.source})"
    head.name = ref.text
    head.extra["hub"] = {"repo_id": ref.repo_id, "revision": ref.revision or "main",
                         "commit": repo.commit, "files": sorted(repo.fetched)}
    head.load_seconds = time.perf_counter() - t0
    return head


def tokenizer_file(ref: HubRef) -> Path:
    """The local path of a Hub repo's tokenizer: its ``tokenizer.json`` (beside the named
    file, if any), or the named GGUF file, which holds one.

    Raises:
        ValueError: the repo has no tokenizer.json; the errors of :func:`load_hub_head`.
    """
    repo = _Repo(ref)
    if ref.filename and ref.filename.lower().endswith(".gguf"):
        return _gguf_parts(repo, ref.filename)
    name = _join(posixpath.dirname(ref.filename or ""), "tokenizer.json")
    path = repo.get(name, "tokenizer.json")
    if path is not None:
        return path
    if repo.offline:
        raise repo.offline_error(name)
    raise ValueError(f"{repo.label}: no {name} in the Hugging Face Hub repo; pass a tokenizer "
                     "(--tokenizer), or name the repo's .gguf file")
