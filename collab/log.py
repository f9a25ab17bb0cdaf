"""Logging: stdlib logging, one JSON object per line (orjson), context from `extra=`."""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import re
import sys
import threading
from types import TracebackType
from typing import Any

import orjson

# Attributes every LogRecord has; anything else came from `extra=` and is context.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


# uvicorn logs each WebSocket request line, query string included: `?token=<JWT>` must not
# reach a log file (tokens are bearer credentials).
_TOKEN = re.compile(r"(token=)[^&\s\"']+")


def redact(text: str) -> str:
    return _TOKEN.sub(r"\1[redacted]", text)


class JsonLinesFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "t": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key != "color_message":
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLinesFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


# --- crashes: nothing may end the process (or a thread, or a task) without a log line -----------

_crash_log = logging.getLogger("collab.crash")


def install_crash_reporting() -> None:
    """Log uncaught exceptions of the main thread and of every other thread, and dump every
    thread's Python stack to stderr on a fatal signal (SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL:
    a crash in native code such as pycrdt's or OpenSlide's leaves no log line otherwise)."""
    faulthandler.enable(file=sys.stderr, all_threads=True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_exception


def report_loop_exceptions(loop: asyncio.AbstractEventLoop) -> None:
    """Log what the event loop catches (a callback that raised, a task whose exception nobody
    retrieved) in the JSON format, with the loop's context."""
    loop.set_exception_handler(_log_loop_exception)


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    _crash_log.critical("uncaught exception, the process ends: %s", exc, exc_info=(kind, exc, tb))


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    exc_info = (args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback)
    _crash_log.error("uncaught exception in thread %s: %s", name, args.exc_value,
                     exc_info=exc_info, extra={"thread_name": name})


def _log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    extra = {k: repr(v)[:500] for k, v in context.items() if k not in ("message", "exception")}
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    _crash_log.error("event loop: %s", context.get("message", "unhandled exception"),
                     exc_info=exc_info, extra={"loop_context": extra})
