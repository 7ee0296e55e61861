"""Errors and warnings said once: one line on rank 0, the same exit status on every rank.

A configuration or input error (`ConfigError`) is found by every rank alike, before any
collective, so each rank can exit on its own with `EXIT_CONFIG` while only rank 0 prints
``minidist: error: ...``. The rank comes from the launcher's environment, so nothing here
touches MPI. ``--debug`` or ``MINIDIST_DEBUG=1`` re-raises instead, with the traceback.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

from .launcher import env_flag, launcher_rank, launcher_size  # noqa: F401  (re-exported for the CLI)

EXIT_CONFIG = 2  # argparse's status for a usage error


class ConfigError(ValueError):
    """A flag or input file with an impossible value; the message names both."""


def debug_wanted(argv_debug: bool = False) -> bool:
    return argv_debug or env_flag("MINIDIST_DEBUG")


def say_once(kind: str, message: str) -> None:
    """Print ``minidist: KIND: message`` to stderr on rank 0 only."""
    if launcher_rank() == 0:
        sys.stderr.write(f"minidist: {kind}: {message}\n")
        sys.stderr.flush()


def warn(message: str) -> None:
    say_once("warning", message)



def fail(exc: BaseException, debug: bool = False) -> int:
    """Report a configuration error once and return the exit status (re-raise with --debug)."""
    if debug_wanted(debug):
        raise exc
    say_once("error", str(exc).replace("\n", " "))
    return EXIT_CONFIG  # every rank exits with it at once: minidist.comm.failstop lets them leave quietly


def run_guarded(fn, *args, debug: bool = False) -> int:
    """``fn(*args)``, with a ConfigError (or a missing/unreadable input file) turned into one
    line on rank 0 and `EXIT_CONFIG` on every rank."""
    try:
        return fn(*args) or 0
    except ConfigError as exc:
        return fail(exc, debug)
    except (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        return fail(ConfigError(f"{exc.filename}: {exc.strerror}"), debug)


# ---- checks shared by every subcommand: each names the option and the value ----

def positive_int(option: str, value, minimum: int = 1) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{option} {value!r}: not a number; give an integer >= {minimum}") from None
    if not math.isfinite(number) or number != int(number) or number < minimum:
        raise ConfigError(f"{option} {value!r}: must be an integer >= {minimum}")
    return int(number)


def positive_float(option: str, value, *, allow_zero: bool = False, upper: float | None = None) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{option} {value!r}: not a number") from None
    low_ok = number >= 0 if allow_zero else number > 0
    if not math.isfinite(number) or not low_ok or (upper is not None and number >= upper):
        bound = ">= 0" if allow_zero else "> 0"
        high = "" if upper is None else f" and < {upper:g}"
        raise ConfigError(f"{option} {value!r}: must be a finite number {bound}{high}")
    return number


def int_list(option: str, text: str, minimum: int = 1) -> list[int]:
    items = [s.strip() for s in str(text).split(",") if s.strip()]
    if not items:
        raise ConfigError(f"{option} {text!r}: give a comma-separated list such as 2,8,64")
    return [positive_int(option, s, minimum) for s in items]


def choice_list(option: str, text: str, choices) -> list[str]:
    items = [s.strip() for s in str(text).split(",") if s.strip()]
    unknown = [s for s in items if s not in choices]
    if not items or unknown:
        raise ConfigError(f"{option} {text!r}: unknown {unknown or 'empty list'}; choose from "
                          f"{', '.join(choices)}")
    return items


def profile_option(option: str, value: str | None, fallback: str):
    """The Profile named by `value` (a name or a JSON file), else by $MINIDIST_PROFILE, else
    `fallback`; a ConfigError naming the option (or the variable) and the value otherwise."""
    from .cost.profiles import PROFILES, get_profile, load_profile

    if value is None:
        env = os.environ.get("MINIDIST_PROFILE")
        option, value = ("MINIDIST_PROFILE", env) if env else (option, fallback)
    if value in PROFILES:
        return get_profile(value)
    if not os.path.isfile(value):
        raise ConfigError(f"{option} {value!r}: neither a profile name ({', '.join(PROFILES)}) nor "
                          "an existing JSON file (`minidist calibrate --out FILE` writes one)")
    try:
        return load_profile(value)
    except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise ConfigError(f"{option} {value!r}: not a valid profile file ({exc})") from None


class Parser(argparse.ArgumentParser):
    """argparse with defaults shown, examples kept as written, and usage errors raised as
    ConfigError (so they are said once, on rank 0) instead of printed on every rank."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise ConfigError(f"{message} (see `{self.prog} --help`)")

    def print_help(self, file=None):
        if launcher_rank() == 0:
            super().print_help(file)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each help text (unless the text says it, or there is none);
    descriptions and examples printed as written."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)
