"""``config.yaml``: the daemon's settings, validated with located errors.

Every section has working defaults, so an empty file is a valid config for
replay and the demo. Secrets are never values in this file: settings ending
in ``_file`` name a file to read them from (systemd credentials), and the
documented environment variables override them.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from daemon import yamlfile

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = re.compile(r"(\d+)\s*(B|KiB|MiB|KB|MB)?")
_SIZE_UNIT = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "KB": 1000, "MB": 1000**2}


def parse_duration(value: Any) -> float:
    """Seconds from ``90s``, ``15m``, ``2h``, ``1d``, ``1h30m`` or a plain number.

    People write durations in YAML; ``15 minutes`` or ``15`` (which unit?) are
    the usual mistakes, so the error shows the accepted forms.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90s, 15m, 2h or 1d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        parts = _DURATION.findall(text)
        if parts and "".join(n + u for n, u in parts) == text.replace(" ", ""):
            return sum(float(n) * _UNIT[u] for n, u in parts)
    raise ValueError(f"expected a duration such as 90s, 15m, 2h or 1d, got {value!r}")


def parse_size(value: Any) -> int:
    """Bytes from ``262144``, ``256KiB`` or ``1MiB``."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match:
            return int(match.group(1)) * _SIZE_UNIT[match.group(2)]
    raise ValueError(f"expected a size such as 262144, 256KiB or 1MiB, got {value!r}")


def read_secret(path: Path) -> str:
    """A secret from a file; a relative path is looked up in systemd's
    ``$CREDENTIALS_DIRECTORY`` first (``LoadCredential=``), then the cwd."""
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if not path.is_absolute() and creds and (Path(creds) / path).is_file():
        path = Path(creds) / path
    return path.read_text(encoding="utf-8").strip()


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema({"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d|w))+$"}),
]
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema({"type": ["integer", "string"], "pattern": r"^\d+\s*(B|KiB|MiB|KB|MB)?$"}),
]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors (typos get caught)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttConfig(Section):
    """The broker crisisd subscribes to (the MQTT contract is in README.md)."""

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    prefix: str = "crisisd"
    client_id: str = "crisisd"
    qos: Literal[0, 1] = 1
    keepalive: int = Field(30, ge=5)
    username: str | None = None
    password_file: Path | None = Field(
        None, description="file holding the password; env CRISISD_MQTT_PASSWORD wins"
    )
    tls: bool = False
    max_payload: Size = 256 * 1024
    deadletter: bool = False
    reconnect_min: Duration = 1.0
    reconnect_max: Duration = 60.0
    idle_tick: Duration = Field(5.0, description="advance the watermark this often in silence")
    max_unacked: int = Field(
        500,
        ge=0,
        description="received QoS 1 messages left unacknowledged until journaled; past "
        "this, the oldest is acknowledged on receipt. Keep it below the broker's queue "
        "limit (mosquitto max_queued_messages, 1000 by default), which counts them",
    )

    def password(self) -> str | None:
        """The broker password from the environment or ``password_file``."""
        env = os.environ.get("CRISISD_MQTT_PASSWORD")
        if env:
            return env
        if self.password_file is not None:
            return read_secret(self.password_file) or None
        return None


class WindowConfig(Section):
    """Event-time bucketing of each series (brand × channel)."""

    bucket: Duration = 60.0
    lateness: Duration = 120.0
    max_ahead: Duration | None = Field(
        900.0, description="live: events stamped further past this host's clock are rejected "
        "(a producer's wrong clock or time zone), and event time never runs past the clock; "
        "null for a stream that plays a simulated future")
    samples: int = Field(3, ge=0, le=20, description="highest-reach mentions kept per bucket")
    top_terms: int = Field(20, ge=0, description="terms kept per bucket")
    max_series: int = Field(
        10_000, ge=1, description="series (brand × channel) watched at most: the events of a "
        "new series past it are refused and counted, so a producer that invents topics cannot "
        "grow memory without bound (about 70 KiB a series with every signal on)")


class DetectionConfig(Section):
    """Which signals are watched and how sensitive the alert threshold is."""

    sensitivity: Literal["fewer", "balanced", "more"] = "balanced"
    threshold: float | None = Field(
        None, gt=0.5, lt=1.0, description="explicit score threshold; overrides sensitivity"
    )
    warmup: Duration = 86400.0
    signals: list[
        Literal["volume", "negative_share", "negative_volume", "sentiment", "terms", "reach"]
    ] = ["volume", "negative_share", "negative_volume", "sentiment", "terms", "reach"]
    min_volume: int = Field(
        20, ge=0, description="buckets below this volume never alert on negative share/sentiment"
    )
    lexicon: Path | None = Field(None, description="crisis lexicon YAML; default: the bundled one")
    holidays: list[dt.date] = Field(
        default_factory=list, description="public holidays (YYYY-MM-DD, UTC days): volume "
        "expects each as a day of its own instead of its weekday, learnt from the holidays "
        "before it (the first from the quietest weekday)")
    holidays_by_brand: dict[str, list[dt.date]] = Field(
        default_factory=dict, description="more holidays for the brands a glob matches "
        "(another market's: 'acme-us*': [2026-11-26]), besides those of every brand")
    snapshot_interval: Duration = Field(
        300.0, description="save detector state this often (and at shutdown)"
    )


class IncidentConfig(Section):
    """How anomalies become incidents when no playbook says otherwise."""

    quiet: Duration = Field(7200.0, description="auto-resolve after this long without anomalies")
    cooldown: Duration = Field(1800.0, description="a resolved key re-opens only after this")


class LogConfig(Section):
    """Structured logging; ``auto`` is JSON under ``run``, console elsewhere."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class PersonConfig(Section):
    """Someone crisisd can assign a role to and notify (addresses, not secrets)."""

    name: str = Field(description="display name used in messages")
    email: str | None = None
    pager: str | None = Field(None, description="pager target, e.g. a PagerDuty routing key")
    chat: str | None = Field(None, description="chat handle, e.g. a Slack member id")
    timezone: str = "UTC"


class TeamConfig(Section):
    """A group notified together (``team:legal`` in a playbook)."""

    members: list[str] = Field(default_factory=list, description="person ids")
    email: str | None = Field(None, description="a distribution list, used instead of members")
    chat: str | None = Field(None, description="a chat channel for the team")


Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


class RotationConfig(Section):
    """An on-call rotation: members take turns, handing off at a local time.

    ``start`` is the date of the first hand-off to ``members[0]``; each turn
    lasts ``period`` (``daily`` or ``weekly``, hand-off on ``handoff_day``)
    and changes at ``handoff_time`` in ``timezone`` (wall-clock, so a 09:00
    hand-off stays 09:00 across daylight-saving changes).
    """

    members: list[str] = Field(min_length=1, description="person ids, in turn order")
    period: Literal["daily", "weekly"] = "weekly"
    handoff_day: Weekday = "monday"
    handoff_time: str = Field("09:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    timezone: str = "UTC"
    start: str = Field(
        "2024-01-01", pattern=r"^\d{4}-\d{2}-\d{2}$", description="date of the first hand-off"
    )


class OverrideConfig(Section):
    """Someone covers a rotation for a span (holiday swap, sick day)."""

    rotation: str
    person: str
    start: str = Field(description="ISO date-time with offset, e.g. 2026-11-23T09:00:00+01:00")
    end: str


_KIND_MEDIA = {
    "pagerduty": ["page"],
    "smtp": ["email"],
    "slack": ["chat"],
    "teams": ["chat"],
    "webhook": ["webhook"],
    "x": ["post"],
    "facebook": ["post"],
    "mastodon": ["post"],
}


class TargetConfig(Section):
    """A delivery target of the outbox, one file per ``type`` in ``daemon/targets/``.

    Secrets (routing key, token, SMTP password, HMAC secret, the Slack or Teams
    webhook URL, which is itself a credential) are never values here: the
    environment variable ``secret_env`` (default ``CRISISD_TARGET_<NAME>_SECRET``)
    wins over ``secret_file``. ``media`` defaults to what the type is for.
    """

    type: Literal[
        "log", "file", "pagerduty", "smtp", "slack", "teams", "webhook", "x", "facebook", "mastodon"
    ] = "log"
    media: list[Literal["page", "email", "chat", "post", "webhook"]] = Field(
        default_factory=lambda: ["page", "email", "chat", "post", "webhook"],
        description="which kinds of action this target delivers",
    )
    path: Path | None = Field(None, description="directory of the file target")
    channels: list[str] | None = Field(
        None,
        description="origin channels this target posts statements for (default: its own "
        "platform's — x: twitter and x, facebook, mastodon; other types: every channel)",
    )
    test: bool = Field(False, description="drills and replays deliver to test targets only")
    url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="API base URL (default: the platform's) or the generic webhook's endpoint",
    )
    secret_env: str | None = Field(None, description="env var holding this target's secret")
    secret_file: Path | None = Field(
        None, description="file holding the secret; relative: $CREDENTIALS_DIRECTORY first"
    )
    timeout: Duration = Field(10.0, description="per request; a post timing out is not retried")
    source: str | None = Field(None, description="PagerDuty payload.source; default: host name")
    account: str | None = Field(None, description="Facebook Page id")
    host: str = Field("localhost", description="SMTP server")
    port: int | None = Field(None, ge=1, le=65535, description="default 587, 465 or 25")
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    ca_file: Path | None = Field(None, description="CA bundle to verify the server (PEM)")
    username: str | None = Field(None, description="SMTP login; the password is the secret")
    sender: str | None = Field(None, description="From address of emails")
    signature_header: str = Field("X-Crisisd-Signature", description="webhook HMAC header")
    concurrency: int = Field(4, ge=1, le=64, description="requests in flight to this target")
    rate_per_minute: float | None = Field(
        None, gt=0, description="at most this many requests a minute (default: no limit)"
    )

    @model_validator(mode="before")
    @classmethod
    def _kind_media(cls, data: Any) -> Any:
        """A PagerDuty target pages, an SMTP target emails: default ``media`` by ``type``."""
        if isinstance(data, dict) and "media" not in data and data.get("type") in _KIND_MEDIA:
            return {**data, "media": _KIND_MEDIA[data["type"]]}
        return data

    @model_validator(mode="after")
    def _required(self) -> TargetConfig:
        if self.type == "smtp" and not self.sender:
            raise ValueError("an smtp target needs `sender` (the From address)")
        if self.type == "facebook" and not self.account:
            raise ValueError("a facebook target needs `account` (the Page id)")
        return self


class ApiConfig(Section):
    """The local control API (``daemon.api``) the CLI's ``incidents`` commands call.

    Loopback by default: it controls pages and public posts. Every write needs
    the bearer token (env ``CRISISD_API_TOKEN`` wins over ``token_file``);
    without a token, writes are refused. Reads are open on a loopback
    address unless ``auth_reads``; on any other address they need the token too.
    """

    enabled: bool = True
    listen: str = Field(
        "127.0.0.1:8787",
        pattern=r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$",
        description="host:port ([::1]:8787 for IPv6)",
    )
    token_file: Path | None = Field(
        None, description="file holding the bearer token; relative: $CREDENTIALS_DIRECTORY first"
    )
    auth_reads: bool = Field(False, description="require the token for GET requests too")

    @property
    def host(self) -> str:
        """The address to bind (brackets of an IPv6 literal removed)."""
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        """The TCP port to bind (0: any free port, for tests)."""
        return int(self.listen.rsplit(":", 1)[1])

    def token(self) -> str | None:
        """The bearer token from ``CRISISD_API_TOKEN`` or ``token_file``; ``None`` if unset."""
        env = os.environ.get("CRISISD_API_TOKEN")
        if env:
            return env
        if self.token_file is not None:
            return read_secret(self.token_file) or None
        return None


class PlaybooksConfig(Section):
    """Where the crisis playbooks live."""

    dir: Path = Path("playbooks")
    reports: bool = True


class Config(Section):
    """The whole of ``config.yaml``."""

    mqtt: MqttConfig = MqttConfig()
    windows: WindowConfig = WindowConfig()
    detection: DetectionConfig = DetectionConfig()
    incidents: IncidentConfig = IncidentConfig()
    log: LogConfig = LogConfig()
    state_dir: Path = Path("state")
    people: dict[str, PersonConfig] = Field(default_factory=dict)
    teams: dict[str, TeamConfig] = Field(default_factory=dict)
    rotations: dict[str, RotationConfig] = Field(default_factory=dict)
    overrides: list[OverrideConfig] = Field(default_factory=list)
    targets: dict[str, TargetConfig] = Field(default_factory=lambda: {"log": TargetConfig()})
    playbooks: PlaybooksConfig = PlaybooksConfig()
    api: ApiConfig = ApiConfig()


def load(path: str | Path | None) -> Config:
    """Read and validate ``config.yaml``; ``None`` gives the defaults.

    Raises ``yamlfile.FileProblems`` listing every error with its position.
    """
    if path is None:
        return Config()
    located = yamlfile.load(path)
    if not isinstance(located.data, dict):
        raise yamlfile.FileProblems([located.problem((), "expected a mapping of settings")])
    return yamlfile.validate(located, Config)
