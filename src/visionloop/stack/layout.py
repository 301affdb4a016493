"""Where the stack keeps its state: one folder (`stack.dir`), nothing outside it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from visionloop.config import Config
from visionloop.errors import VisionloopError

HOST = "127.0.0.1"  # every server of the stack listens on loopback only


class StackError(VisionloopError):
    """The stack cannot do what was asked; the message says what to do."""


@dataclass(frozen=True)
class Layout:
    root: Path

    @classmethod
    def of(cls, config: Config) -> Layout:
        return cls(config.stack.dir)

    @property
    def postgres(self) -> Path:
        """Owned by the PostgreSQL server's user: its data folder and its log live here."""
        return self.root / "postgres"

    @property
    def pgdata(self) -> Path:
        return self.postgres / "data"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets.json"

    @property
    def mlflow_auth_config(self) -> Path:
        return self.root / "mlflow-auth.ini"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def state(self) -> Path:
        """What `up` last did that it need not repeat (the prefect.yaml it deployed)."""
        return self.root / "state.json"

    def pid_file(self, name: str) -> Path:
        return self.root / "run" / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"
