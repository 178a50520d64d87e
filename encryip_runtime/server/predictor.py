"""The request path shared by the gRPC services and REST, in domain terms (no protobuf here).

resolve the model name -> check the input against the model -> queue it in that model's
micro-batcher -> await its ciphertexts (grpc cancels the wait at the request's deadline;
the batcher drops requests whose deadline passed while queued).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from encryip_runtime.crypto.profiles import profile_of
from encryip_runtime.exceptions import InputError
from encryip_runtime.server.metrics import ServerMetrics
from encryip_runtime.server.model_store import LoadedModel, ModelRepository
from encryip_runtime.server.status import DeadlineExpiredError, NotReadyError, UnknownModelError
from encryip_runtime.server.tensors import check_input

__all__ = ["Prediction", "Predictor"]

# gRPC reports "no deadline" as a huge time_remaining(); anything longer means none.
_NO_DEADLINE_S = 86400.0 * 365


@dataclass(frozen=True)
class Prediction:
    wire: npt.NDArray[np.uint8]
    onehot: npt.NDArray[np.float32] | None
    model: LoadedModel


class Predictor:
    def __init__(self, repository: ModelRepository, metrics: ServerMetrics | None = None) -> None:
        self.repository = repository
        self._metrics = metrics
        self._draining = False
        self._inflight = 0
        self._idle = threading.Condition()
        self._children: dict[tuple[str, str], Any] = {}

    def begin_drain(self) -> None:
        """Refuse new predictions (``UNAVAILABLE``); accepted ones carry on."""
        with self._idle:
            self._draining = True

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no accepted prediction is in flight (True) or the timeout passes."""
        end = time.monotonic() + timeout_s
        with self._idle:
            while self._inflight:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def resolve(self, model_name: str, version: str = "") -> LoadedModel:
        """The model called ``model_name`` (empty: the only one served) at ``version``
        (empty: the served one, the latest). ``UnknownModelError`` names what is served."""
        if self._draining:
            raise NotReadyError("server is draining; retry on another replica")
        found = self.repository.get(model_name)
        if found is None:
            names = self.repository.names()
            if not names:
                raise NotReadyError("no model loaded")
            if not model_name:
                raise InputError(f"this server serves {len(names)} models: name one of {names}")
            raise UnknownModelError(
                f"unknown model {model_name[:128]!r}: this server serves "
                + ", ".join(repr(n) for n in names)
            )
        loaded = found[0]
        if version and version != loaded.version:
            raise UnknownModelError(
                f"unknown version {version[:32]!r} of model {loaded.name!r}: "
                f"served versions: {loaded.version}"
            )
        return loaded

    def ready(self, model_name: str | None = None, version: str = "") -> bool:
        """Whether the server (``model_name`` None: some model serves) or that model can
        answer predictions."""
        if self._draining:
            return False
        if model_name is None:
            return bool(self.repository.names())
        try:
            self.resolve(model_name, version)
        except (NotReadyError, InputError):
            return False
        return True

    def versions(self, model_name: str) -> list[str]:
        """The versions of ``model_name`` that are served."""
        found = self.repository.get(model_name)
        return [found[0].version] if found is not None else []

    async def predict(
        self,
        loaded: LoadedModel,
        x: npt.NDArray[Any],
        *,
        onehot: bool = False,
        timeout_s: float | None = None,
    ) -> Prediction:
        """Ciphertexts of ``x``'s rows. Cancelling the awaiting task (grpc does when the
        client goes away or the deadline passes) drops the request from the queue."""
        check_input(x, loaded.spec)
        if onehot and profile_of(loaded.profile).uses_codebook:
            raise InputError(
                "the one-hot form Phi(c) exists only in the paper profile; "
                f"model {loaded.name!r} uses {loaded.profile!r}"
            )
        if timeout_s is not None and timeout_s > _NO_DEADLINE_S:
            timeout_s = None
        if timeout_s is not None and timeout_s <= 0:
            raise DeadlineExpiredError("deadline passed before the request was queued")
        with self._idle:
            if self._draining:
                raise NotReadyError("server is draining; retry on another replica")
            self._inflight += 1
        try:
            found = self.repository.get(loaded.name)
            if found is None:
                raise NotReadyError(f"model {loaded.name!r} was unloaded")
            future = found[1].submit(
                loaded.model, x, tag=loaded, onehot=onehot, timeout_s=timeout_s
            )
            # Cancelling this task cancels ``future`` too; the batcher then skips it.
            result = await future
            if self._metrics is not None:
                self._count(loaded, len(x))
            return Prediction(result.wire, result.onehot, result.tag)
        finally:
            with self._idle:
                self._inflight -= 1
                if not self._inflight:
                    self._idle.notify_all()

    def _count(self, loaded: LoadedModel, rows: int) -> None:
        assert self._metrics is not None
        key = (loaded.name, loaded.version)
        child = self._children.get(key)
        if child is None:
            child = self._metrics.model_rows.labels(model=loaded.name, version=loaded.version)
            self._children[key] = child
        child.inc(rows)
