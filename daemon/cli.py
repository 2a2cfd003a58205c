"""The ``crisisd`` command line.

Each subcommand parses its arguments here and hands over to the module that
does the work; this file holds no pipeline logic of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

from daemon import config as config_mod
from daemon import logs
from daemon.config import parse_duration
from daemon.yamlfile import FileProblems


def _config_path(arg: str | None) -> Path | None:
    """``-c``, else ``$CRISISD_CONFIG``, else ``./config.yaml`` if present."""
    if arg:
        return Path(arg)
    env = os.environ.get("CRISISD_CONFIG")
    if env:
        return Path(env)
    local = Path("config.yaml")
    return local if local.is_file() else None


def _load(arg: str | None) -> config_mod.Config:
    return config_mod.load(_config_path(arg))


def cmd_demo(args: argparse.Namespace) -> int:
    """Replay the bundled synthetic week and show the incident it opens."""
    from daemon import backtest, demo
    from daemon.timeline import TimelinePrinter

    cfg = _load(args.config)
    logs.setup("warning")
    with tempfile.TemporaryDirectory(prefix="crisisd-demo-") as tmp:
        path = Path(args.write) if args.write else Path(tmp) / "northwind-week.jsonl"
        count = demo.write(path)
        print(
            f"crisisd demo: replaying a synthetic week of {count:,} mentions of "
            f"'{demo.BRAND}' (twitter, facebook) through the pipeline...",
            flush=True,
        )
        printer = TimelinePrinter(json_lines=args.json)
        responders = backtest.Responders(
            parse_duration(args.ack_after), parse_duration(args.approve_after)
        )
        result = asyncio.run(
            backtest.replay([path], cfg, listeners=[printer.event], on_entry=printer.entry,
                            responders=responders)
        )
    print("\n" + result.summary())
    return 0 if result.opened else 1


def cmd_replay(args: argparse.Namespace) -> int:
    """Run the pipeline over files and print the incidents it opens and resolves."""
    from daemon import backtest
    from daemon.sources.replay import ReplayError
    from daemon.timeline import TimelinePrinter

    cfg = _load(args.config)
    logs.setup(cfg.log.level if args.verbose else "warning")
    printer = TimelinePrinter(json_lines=args.json)
    scores = Path(args.scores) if args.scores else None
    out = sys.stderr if args.json else sys.stdout
    # Not the daemon's state directory: a backtest of days the daemon saw live opens
    # incidents with the same ids, and its reports would overwrite the real ones.
    with tempfile.TemporaryDirectory(prefix="crisisd-replay-") as tmp:
        state = Path(args.keep) if args.keep else Path(tmp)
        try:
            result = asyncio.run(
                backtest.replay([Path(p) for p in args.files],
                                cfg.model_copy(update={"state_dir": state}), scores=scores,
                                listeners=[printer.event], on_entry=printer.entry)
            )
        except ReplayError as exc:
            print(f"crisisd replay: {exc}", file=sys.stderr)
            return 2
    print(result.summary(), file=out)
    if result.opened and not args.keep:
        print("(reports and test deliveries discarded; use --keep DIR to keep them)", file=out)
    if scores is not None:
        print(f"wrote {len(result.score_files)} score files under {scores}/", file=out)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the live daemon until SIGTERM."""
    from daemon import service

    path = _config_path(args.config)
    cfg = config_mod.load(path)
    fmt = cfg.log.format
    logs.setup(cfg.log.level, json_lines=fmt in ("auto", "json"))
    return asyncio.run(service.serve(cfg, path))


def cmd_validate(args: argparse.Namespace) -> int:
    """Check the configuration and the playbooks; print every problem located."""
    from daemon import playbook

    path = _config_path(args.config)
    problems = playbook.validate_all(path)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        n = len(problems)
        print(f"{n} problem{'s' if n != 1 else ''} found", file=sys.stderr)
        return 1
    cfg = config_mod.load(path)
    print(f"{path or 'built-in defaults'}: ok; playbooks in {cfg.playbooks.dir}/: ok")
    return 0


def cmd_drill(args: argparse.Namespace) -> int:
    """Rehearse a playbook on a simulated clock (``daemon.drill``)."""
    from daemon import drill

    logs.setup("warning")
    return drill.command(args, _load(args.config))


def cmd_schema(args: argparse.Namespace) -> int:
    """Print or write the playbook JSON Schema (``daemon.playbook``)."""
    from daemon import playbook

    return playbook.schema_command(args.write)


def cmd_silence(args: argparse.Namespace) -> int:
    """Add, list or expire silences (``daemon.ctl``: the API, else the store)."""
    from daemon import ctl

    return ctl.silence_command(args, _load(args.config))


def cmd_incidents(args: argparse.Namespace) -> int:
    """List, show, acknowledge, approve, resolve incidents; retry or cancel actions."""
    from daemon import ctl

    return ctl.incidents_command(args, _load(args.config))


def cmd_reload(args: argparse.Namespace) -> int:
    """Make the running daemon re-read its config and playbooks."""
    from daemon import ctl

    return ctl.reload_command(args, _load(args.config))


def cmd_series(args: argparse.Namespace) -> int:
    """Show the series the running daemon watches: warm yet, and what is normal now."""
    from daemon import ctl

    return ctl.series_command(args, _load(args.config))


def cmd_test_notify(args: argparse.Namespace) -> int:
    """Send one marked test message through a configured target; show receipt or error."""
    from daemon import testnotify

    logs.setup("warning")
    return testnotify.run(_load(args.config), args.target, to=args.to, public=args.public)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="crisisd",
        description="Crisis detection and alerting for brand and customer-care teams.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: object, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("-c", "--config", help="config.yaml (default: $CRISISD_CONFIG "
                       "or ./config.yaml)")
        p.set_defaults(func=func)
        return p

    p = add("demo", cmd_demo, "replay a synthetic week with a crisis and show the incident")
    p.add_argument("--json", action="store_true", help="JSON lines instead of a timeline")
    p.add_argument("--write", metavar="FILE", help="also keep the generated stream here")
    p.add_argument("--ack-after", default="4m", metavar="DURATION",
                   help="the simulated commander acknowledges this long after opening")
    p.add_argument("--approve-after", default="9m", metavar="DURATION",
                   help="the simulated approver approves the statement this long after opening")

    p = add("replay", cmd_replay, "run the pipeline over JSON-lines or CSV files")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--scores", metavar="DIR", help="write DIR/<signal>/<series>.csv scores")
    p.add_argument("--json", action="store_true", help="JSON lines instead of a timeline")
    p.add_argument("--keep", metavar="DIR", help="keep the post-crisis reports and what the "
                   "test targets received here (default: discarded; never the state_dir)")
    p.add_argument("-v", "--verbose", action="store_true", help="log detector progress")

    add("run", cmd_run, "run the daemon: subscribe to MQTT until SIGTERM")
    add("validate", cmd_validate, "check config.yaml and report every error")
    p = add("test-notify", cmd_test_notify, "send a test message through one delivery target")
    p.add_argument("target", metavar="TARGET", help="a name under `targets:` in config.yaml")
    p.add_argument("--to", metavar="ADDRESS", help="email recipient (default: the sender)")
    p.add_argument("--public", action="store_true", help="allow a test post on a public channel")

    from daemon.drill import add_arguments as drill_arguments

    drill_arguments(add("drill", cmd_drill, "rehearse a playbook on a simulated clock"))
    p = add("schema", cmd_schema, "print the playbook JSON Schema")
    p.add_argument("--write", metavar="DIR", help="write DIR/playbook.schema.json instead")
    from daemon import ctl

    ctl.add_silence_arguments(add("silence", cmd_silence, "silence incidents for a planned event"))
    ctl.add_incident_arguments(
        add("incidents", cmd_incidents, "incidents and their actions, through the control API")
    )
    ctl.add_common_arguments(
        add("reload", cmd_reload, "make the running daemon re-read config.yaml and playbooks")
    )
    ctl.add_series_arguments(
        add("series", cmd_series, "the series watched: warm yet, and what is normal now")
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``crisisd`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FileProblems as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        n = len(exc.problems)
        print(f"{n} problem{'s' if n != 1 else ''} found", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
