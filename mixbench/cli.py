"""Entry-point helpers: every ``python -m`` command prints user errors without a traceback."""

from __future__ import annotations

import argparse
import functools
import sys

from mixbench.errors import MixbenchError
from mixbench.no_room import file_being_written, no_room_errno, no_room_message


def main_guard(main):
    """Run an entry point; print MixbenchError messages without a traceback and exit 2. So is a
    write that found no room outside ``mixbench.io``'s atomic writes (they say it themselves),
    naming the file from the error or, where it names none, from the writer in its frames."""

    @functools.wraps(main)
    def wrapped(argv=None):
        try:
            return main(argv)
        except MixbenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except Exception as exc:
            number = no_room_errno(exc)
            if number is None:
                raise
            target = getattr(exc, "filename", None) or file_being_written(exc.__traceback__)
            print(f"error: {no_room_message(number, target)}", file=sys.stderr)
            sys.exit(2)

    return wrapped


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", nargs="+", required=True, help="config YAML file(s), later ones win")


def add_run_arguments(parser: argparse.ArgumentParser, *, size_help: str, upstream_help: str) -> None:
    """The config and what names a run of the grid (size, strategy, seed) and the runs it reads:
    the arguments every entry point of the train and fit rules takes."""
    add_config_argument(parser)
    parser.add_argument("--size", required=True, help=size_help)
    parser.add_argument("--strategy", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--upstream", nargs="*", default=[], metavar="STAGE=DIR", help=upstream_help)


def config_command(step, description: str, *, load):
    """``main`` for an entry point whose only argument is the config: ``step(load(*files))``.
    ``load``: ``mixbench.config.load``, or ``strategies.grid_config.load`` where the step reads the grid's
    strategies (it checks them too)."""

    @main_guard
    def main(argv=None):
        parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
        add_config_argument(parser)
        step(load(*parser.parse_args(argv).config))

    return main
