"""Command line tools for the declared channels: ``flask impulse typescript`` (a Flask CLI
group, registered through the ``flask.commands`` entry point) and ``flask-impulse typescript``
(the standalone service's command, for channels declared outside any app)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup

from ..channels import Channel, channels_of, load_channels
from ..errors import ConfigurationError, TypeScriptError
from ..typescript import render_realtime_types

impulse_group = AppGroup("impulse", help="flask-impulse: realtime channels over Server-Sent Events.")


@impulse_group.command("typescript")
@click.option(
    "--channels",
    "spec",
    metavar="MODULE[:NAME]",
    help="Where the channels are declared, instead of the app's Impulse extension.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file.")
@click.option("--interface", default="RealtimeTypes", show_default=True, help="Name of the channel map interface.")
def typescript_command(spec: str | None, output: Path | None, interface: str) -> None:
    """Emit the TypeScript RealtimeTypes of the declared channels, for createRealtimeClient<RealtimeTypes>."""
    try:
        channels = load_channels(spec) if spec else channels_of(current_app)
        text = _render(channels, interface)
    except (ConfigurationError, TypeScriptError, ImportError) as exc:
        raise click.ClickException(str(exc)) from exc
    _write(text, output)


def typescript_main(argv: Sequence[str]) -> int:
    """``flask-impulse typescript --app MODULE[:NAME] [-o FILE]``."""
    parser = argparse.ArgumentParser(
        prog="flask-impulse typescript",
        description="Emit the TypeScript RealtimeTypes interface of declared channels.",
    )
    parser.add_argument(
        "--app",
        required=True,
        metavar="MODULE[:NAME]",
        help="a module (its top-level Channels), or MODULE:NAME naming a Channel list, an Impulse or a Flask app",
    )
    parser.add_argument("-o", "--output", type=Path, help="write to this file instead of standard output")
    parser.add_argument("--interface", default="RealtimeTypes", help="name of the channel map (default RealtimeTypes)")
    args = parser.parse_args(argv)
    if "" not in sys.path:
        sys.path.insert(0, "")  # MODULE is looked up from the current directory, as flask --app does
    try:
        text = _render(load_channels(args.app), args.interface)
    except (ConfigurationError, TypeScriptError, ImportError) as exc:
        print(f"flask-impulse typescript: {exc}", file=sys.stderr)
        return 2
    _write(text, args.output)
    return 0


def _render(channels: list[Channel[Any]], interface: str) -> str:
    if not channels:
        raise ConfigurationError("no channels are declared: pass Impulse(channels=[...]) or call impulse.channel()")
    return render_realtime_types(channels, interface)


def _write(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
