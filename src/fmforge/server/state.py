"""What the routes share: the repository (opened when the server starts), the request limits,
the heartbeat timeout, MLflow's open runs and its registry; a route asks for it as a
``ServerState`` (the ``State`` dependency) instead of closing over it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

from fastapi import Depends, Request

from fmforge.errors import BackendUnavailable
from fmforge.repository import Repository
from fmforge.server.guards import Limits
from fmforge.server.mlflow_registry import MlflowRegistry
from fmforge.server.mlflow_store import MlflowStore


class ServerState:
    def __init__(self, root: Path, *, heartbeat_timeout_s: float, limits: Limits) -> None:
        self.root = root
        self._repo: Repository | None = None  # set when the server starts
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.limits = limits
        self.mlflow = MlflowStore(lambda: self.repo, heartbeat_timeout_s)
        self.mlflow_registry = MlflowRegistry(
            lambda: self.repo, lambda experiment_id: self.mlflow.experiment(experiment_id)
        )

    @property
    def repo(self) -> Repository:
        if self._repo is None:
            raise BackendUnavailable("the server is starting; try again")
        return self._repo

    @repo.setter
    def repo(self, repo: Repository) -> None:
        self._repo = repo


def server_state(request: Request) -> ServerState:
    return cast(ServerState, request.app.state.fmforge)


State = Annotated[ServerState, Depends(server_state)]
