"""What went wrong when a model, tokenizer or dataset could not be fetched from the Hugging
Face hub, as one line: what failed, which id, what to do.

transformers and datasets wrap the hub client's errors (an `OSError`, a `DatasetNotFoundError`,
...) but keep the original as the cause; `hub_problem` walks that chain and names the fault:
no such repository, no such revision, a gated repository, a server error (5xx), no answer
within the client's timeout, a download cut off mid-file, an unreachable endpoint, offline
mode. Files that did not arrive whole are never used: the hub client keeps them as
`.incomplete` in its cache and resumes them on the next run (`tests/test_hub.py` checks it).
"""

from __future__ import annotations

import os


def endpoint() -> str:
    try:
        from huggingface_hub import constants

        return constants.ENDPOINT
    except ImportError:  # pragma: no cover
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def _chain(exc: BaseException | None):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _named(exc: BaseException, *names: str) -> bool:
    return any(cls.__name__ in names for cls in type(exc).__mro__)


def _timeouts() -> str:
    from huggingface_hub import constants

    return (f"HF_HUB_ETAG_TIMEOUT={constants.HF_HUB_ETAG_TIMEOUT}s for metadata, "
            f"HF_HUB_DOWNLOAD_TIMEOUT={constants.HF_HUB_DOWNLOAD_TIMEOUT}s per read")


def hub_problem(exc: BaseException, kind: str = "model", revision: str | None = None) -> str | None:
    """What the hub said, found in `exc`'s chain, as the tail of a line that callers start with
    "cannot load <kind> `<id>`: " (None: not a hub failure). Offline (HF_HUB_OFFLINE=1), the
    callers' own offline lines apply."""
    if offline():
        return None
    chain = list(_chain(exc))
    where = f"the hub ({endpoint()})"

    def found(*names: str, said: str = "\0") -> bool:  # anywhere in the chain, or in what it says: datasets
        return any(_named(err, *names) or said in str(err) for err in chain)  # re-raises without the cause

    if found("GatedRepoError", said="is a gated dataset"):
        return (f"the repository is gated on {where}: request access on its page, then log in "
                "(`hf auth login` or HF_TOKEN) and run the command again")
    if found("RevisionNotFoundError", said="doesn't exist for dataset"):
        rev = f" `{revision}`" if revision else ""
        return f"the repository has no revision{rev} on {where}: name one of its branches, tags or commits"
    if found("RepositoryNotFoundError", "DatasetNotFoundError"):
        return (f"no such {kind} on {where}, or it is private: check the id (org/name), or log in "
                "(`hf auth login` or HF_TOKEN) if you have access")
    for err in chain:
        status = getattr(getattr(err, "response", None), "status_code", None)
        if _named(err, "HfHubHTTPError", "HTTPStatusError", "HTTPError") and isinstance(status, int):
            if status >= 500:
                return f"{where} answered {status} (a server error); nothing was kept: run the command again later"
            if status in (401, 403):
                return (f"{where} refused access ({status}): log in (`hf auth login` or HF_TOKEN) with an account "
                        "that has access")
        if _named(err, "TimeoutException", "Timeout", "ReadTimeout", "TimeoutError"):
            return (f"{where} did not answer in time ({_timeouts()}, after the client's retries): run the command "
                    "again, or raise those variables on a slow network")
        if _named(err, "RemoteProtocolError", "ReadError", "ChunkedEncodingError", "IncompleteRead") or \
                "Consistency check failed" in str(err):
            return (f"the download from {where} was cut off mid-file (after the client's retries); the partial "
                    "file is not used: run the command again to resume it")
        if _named(err, "ConnectError", "NetworkError"):
            return f"cannot reach {where}: check the network or proxy, or HF_ENDPOINT"
    if found("LocalEntryNotFoundError"):
        return f"not in the local cache, and {where} could not be reached: check the network, or HF_ENDPOINT"
    return None
