"""Delivery targets, one file per integration (Alertmanager's ``notify/`` layout).

``build`` turns the ``targets:`` section of ``config.yaml`` into instances the
outbox delivers to. An integration is a module here with a factory
``make(name, cfg, state_dir) -> Target``; adding one means adding the file
and one line to ``FACTORIES``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from daemon.actions import Target
from daemon.config import Config, TargetConfig
from daemon.targets.file import FileTarget
from daemon.targets.log import LogTarget

Factory = Callable[[str, TargetConfig, Path], Target]


def _file(name: str, cfg: TargetConfig, state_dir: Path) -> Target:
    path = cfg.path or Path("outbox")
    return FileTarget(name, path if path.is_absolute() else state_dir / path)


def _log(name: str, cfg: TargetConfig, state_dir: Path) -> Target:
    return LogTarget(name)


def _lazy(module: str) -> Factory:
    """A remote integration, imported when configured (aiosmtplib loads only for smtp)."""

    def factory(name: str, cfg: TargetConfig, state_dir: Path) -> Target:
        return importlib.import_module(f"daemon.targets.{module}").from_config(name, cfg)

    return factory


FACTORIES: dict[str, Factory] = {
    "log": _log,
    "file": _file,
    "pagerduty": _lazy("pagerduty"),
    "smtp": _lazy("smtp"),
    "slack": _lazy("slack"),
    "teams": _lazy("teams"),
    "webhook": _lazy("webhook"),
    "x": _lazy("x"),
    "facebook": _lazy("facebook"),
    "mastodon": _lazy("mastodon"),
}


class UnavailableTarget(Exception):
    """A configured target type has no integration in this build."""


def make(name: str, cfg: TargetConfig, state_dir: Path) -> Target:
    """One target from its config (a file target's path is relative to the state dir)."""
    factory = FACTORIES.get(cfg.type)
    if factory is None:
        raise UnavailableTarget(f"target {name!r}: type {cfg.type!r} is not available")
    return factory(name, cfg, state_dir)


def build(config: Config) -> dict[str, Target]:
    """Every configured target by name."""
    return {name: make(name, cfg, config.state_dir) for name, cfg in config.targets.items()}
