"""How every ``restorelab`` command reports an error: an anticipated one (``AnticipatedError`` anywhere in the
exception's chain, or a command-line parsing error) as one line, ``restorelab: error: <message>``, exit 2, no
traceback; anything else is a bug and keeps its traceback. ``RESTORELAB_DEBUG=1`` shows the traceback of any
error."""
from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path
from typing import Callable

from datamodules.errors import AnticipatedError, DivergenceError

EXIT_ERROR, EXIT_INTERRUPTED = 2, 130


def debug_mode() -> bool:
    return os.environ.get("RESTORELAB_DEBUG", "") not in ("", "0", "false")


def run_reporting_errors(command: Callable[[], int], argv: list[str],
                         on_error: Callable[[int], None] = lambda code: None) -> int:
    try:
        return command()
    except KeyboardInterrupt:
        on_error(EXIT_INTERRUPTED)
        if debug_mode():
            raise
        print("restorelab: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - sorted into anticipated (one line) and bugs (re-raised) below
        on_error(1)
        message = one_line(e, argv)
        if message is None or debug_mode():
            raise
        print(f"restorelab: error: {message}", file=sys.stderr)
        return EXIT_ERROR


def anticipated_cause(e: BaseException) -> AnticipatedError | None:
    """The AnticipatedError that caused ``e`` (itself, or one that jsonargparse wrapped while instantiating)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, AnticipatedError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def one_line(e: BaseException, argv: list[str]) -> str | None:
    cause = anticipated_cause(e)
    if cause is not None:
        message = " ".join(str(cause).split())
        if isinstance(cause, DivergenceError) and cause.checkpoint is not None:
            message += f"; {cause.checkpoint} holds the healthy weights of step {cause.step}"
            if cause.lr is not None:
                message += f"; resume at a lower rate: {resume_command(argv, cause.lr / 10, cause.checkpoint)}"
        return message
    from jsonargparse import ArgumentError
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    if isinstance(e, ArgumentError):
        return condense_parse_error(str(e))
    if isinstance(e, MisconfigurationException):  # Lightning's verdict on the trainer options (a GPU where none is)
        return "trainer options: " + " ".join(str(e).split())
    return None


def resume_command(argv: list[str], lr: float, checkpoint: Path) -> str:
    """``argv`` at learning rate ``lr``, resuming the run that ``checkpoint`` (``<run>/checkpoints/last.ckpt``)
    belongs to: the run id is a hash of the configuration, so a new rate alone would start another run."""
    words, skip = [], False
    for word in argv:
        if skip:
            skip = False
            continue
        if word.split("=", 1)[0] in ("--model.init_args.lr", "--ckpt_path", "--run_id"):
            skip = "=" not in word
            continue
        words.append(word)
    run_id = Path(checkpoint).parent.parent.name
    return "restorelab " + shlex.join([*words, f"--model.init_args.lr={lr:g}", f"--run_id={run_id}",
                                       "--ckpt_path=last"])


def condense_parse_error(message: str) -> str:
    """jsonargparse explains a bad value as a nested tree (union subtypes, class paths, parser keys); the user
    needs its leaf: which option, and what was wrong with the value."""
    keys: list[str] = []
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:
        line = line.removeprefix("error: ")
        if m := re.match(r'Parser key "([^"]+)":?\s*(.*)$', line):
            keys.append(m[1])
            if m[2]:
                return _option(keys) + ": " + m[2]
            continue
        if re.match(r"(?:- )?Problem with given class_path '([^']+)':", line):
            keys.append("init_args")
            continue
        if (re.match(r"-?\s*Expected a <class 'NoneType'>", line) or line.startswith(
                ("Subtypes:", "Given value", "Errors:", "Does not validate", "Problems parsing config"))):
            continue
        if m := re.match(r"(?:- )?Option '([^']+)' is not accepted", line):
            return f"{_option([*keys, m[1]])}: no such option"
        if m := re.match(r"(?:- )?Key '([^']+)' is not expected", line):
            return f"{_option([*keys, m[1]])}: no such option"
        return (_option(keys) + ": " if keys else "") + line.lstrip("- ")
    return " ".join(message.split())


def _option(keys: list[str]) -> str:
    return "--" + ".".join(k for i, k in enumerate(keys) if not (k == "init_args" and i + 1 < len(keys)
                                                                 and keys[i + 1] == "init_args"))


def describe_yaml_error(error) -> str:
    """Where and what a YAML syntax error is, in one line: ``line L, column C: <problem>``."""
    mark = getattr(error, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(getattr(error, "problem", None) or error).split())
