"""Command line: `collab serve`, `collab token`, `collab session create` and `collab archive list`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from collab.archive.cli import add_archive_args, archive_command
from collab.auth import Role, TokenAuthenticator, load_secret, signing_secret
from collab.errors import SecretNotFound
from collab.settings import Settings


def _serve_args(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="run the server (creates the signing secret on first start)")
    p.add_argument("--host", help="interface to listen on (COLLAB_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (COLLAB_PORT, default 8000; 0 picks a free one)")
    p.add_argument("--data", type=Path, help="data directory (COLLAB_DATA, default ./data)")
    p.add_argument("--demo", action="store_true", default=None, help="register a demo slide and print links")
    p.add_argument("--public-url", help="base URL used in printed links (COLLAB_PUBLIC_URL)")
    p.add_argument("--database-url", help="postgresql://... (COLLAB_DATABASE_URL; default SQLite under --data)")
    p.add_argument("--redis-url", help="redis://... for cross-node fan-out (COLLAB_REDIS_URL)")
    deflate = p.add_mutually_exclusive_group()
    deflate.add_argument("--deflate", dest="deflate", action="store_true", default=None,
                         help="negotiate permessage-deflate (COLLAB_DEFLATE)")
    deflate.add_argument("--no-deflate", dest="deflate", action="store_false",
                         help="never negotiate permessage-deflate (the default)")
    p.add_argument("--log-level", help="debug, info, warning (COLLAB_LOG_LEVEL)")


def _token_args(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("token", help="print a signed token (for scripts and tests)")
    p.add_argument("--user", required=True, help="user id (the token's sub: audit, author, presence)")
    p.add_argument("--name", required=True, help="display name, shown to the others")
    p.add_argument("--site", required=True, help="hospital, e.g. Roubaix or Mouscron")
    p.add_argument("--role", required=True, choices=[r.value for r in Role])
    p.add_argument("--slides", default="*", help='comma list of slide ids, or "*" (default)')
    p.add_argument("--ttl", type=float, help="seconds until it expires (default COLLAB_LINK_TTL, 4 h)")
    p.add_argument("--data", type=Path, help="the server's data directory, holding its secret (default ./data)")
    p.add_argument("--database-url", help="the server's postgresql://... (COLLAB_DATABASE_URL), which keeps its secret")


def _session_args(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("session", help="tumor-board sessions: `collab session create` prints links and tokens")
    action = p.add_subparsers(dest="action", required=True)
    create = action.add_parser("create", help="create a session and print its link and tokens")
    create.add_argument("--title", required=True)
    create.add_argument("--slides", required=True, help="comma list of registered slide ids (the agenda)")
    create.add_argument("--user", default="presenter", help="the presenter's user id")
    create.add_argument("--name", default="Presenter")
    create.add_argument("--site", default="Roubaix")
    create.add_argument(
        "--presenter", action="append", type=_person, metavar="ID:NAME:SITE",
        help="another presenter to invite (repeatable; default: dr-mouscron:Dr Leroy (Mouscron):Mouscron)",
    )
    create.add_argument("--trainees", type=int, default=2,
                        help="read-only trainee links, one identity each (default 2)")
    create.add_argument("--ttl", type=float, help="link lifetime in seconds (default COLLAB_LINK_TTL, 4 h)")
    create.add_argument("--data", type=Path, help="data directory of the server")
    create.add_argument("--database-url", help="the server's postgresql://... (COLLAB_DATABASE_URL)")
    create.add_argument("--public-url", help="base URL of the printed links")


# The second presenter printed by default, so that a handover can be tried with the links.
DEFAULT_PRESENTER = ("dr-mouscron", "Dr Leroy (Mouscron)", "Mouscron")


def _person(text: str) -> tuple[str, str, str]:
    # The name may hold a colon; the id comes first and the site last.
    user, _, rest = text.partition(":")
    name, _, site = rest.rpartition(":")
    if not user.strip() or not name.strip() or not site.strip():
        raise argparse.ArgumentTypeError(f"expected ID:NAME:SITE, got {text!r}")
    return user.strip(), name.strip(), site.strip()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="collab",
        description="Real-time collaborative annotation server for digital pathology.",
        epilog="`collab token` and `collab session create` sign with the server's secret: run them "
        "with the server's --data directory (or COLLAB_SECRET). See `collab <command> --help`.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_args(sub)
    _token_args(sub)
    _session_args(sub)
    add_archive_args(sub)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "token":
            return _token(args)
        if args.command == "session":
            return asyncio.run(_session_create(args))
        if args.command == "archive":
            return archive_command(args)
    except SecretNotFound as exc:
        print(f"collab {args.command}: {exc}", file=sys.stderr)
        return 2
    return _serve(args)


async def _session_create(args: argparse.Namespace) -> int:
    """Create a session straight in the store (safe beside a running server: SQLite WAL)."""
    from collab.errors import CollabError
    from collab.sessions.registry import SessionRegistry, session_key
    from collab.slides.registry import SlideRegistry
    from collab.store import open_store

    settings = Settings.from_env(os.environ, data=args.data, public_url=args.public_url,
                                 database_url=args.database_url)
    slides = [s for s in args.slides.split(",") if s]
    # The server's secret, found before anything is opened: a wrong --data creates nothing.
    auth = TokenAuthenticator(settings.secret or await _stored_secret(settings))
    async with open_store(settings) as store:
        presenter = auth.authenticate(
            auth.mint(user=args.user, name=args.name, site=args.site, role="presenter", slides=slides, ttl=60)
        )
        try:
            record, initial = await SessionRegistry(store, SlideRegistry(store)).create(
                presenter, {"title": args.title, "slides": slides}
            )
        except CollabError as exc:
            print(f"collab session create: {exc}", file=sys.stderr)
            return 2
        await store.append(session_key(record["id"]), initial)
    ttl = args.ttl or settings.link_ttl
    base = f"{settings.base_url}/app/?session={record['id']}&token="
    print(f"session {record['id']}: {record['title']} ({', '.join(slides)})")
    print(f"  record: {settings.base_url}/api/sessions/{record['id']}/record?format=html&token=", end="")
    print(auth.mint(user=args.user, name=args.name, site=args.site, role="viewer", slides=slides, ttl=ttl))
    for label, user, name, site, role in session_people(args):
        token = auth.mint(user=user, name=name, site=site, role=role, slides=slides, ttl=ttl)
        print(f"  {label}: {base}{token}")
    return 0


def session_people(args: argparse.Namespace) -> list[tuple[str, str, str, str, str]]:
    """(label, user, name, site, role) of every printed link: each one its own identity."""
    people = [(f"presenter, {args.name}", args.user, args.name, args.site, "presenter")]
    for user, name, site in args.presenter or [DEFAULT_PRESENTER]:
        if user != args.user:
            people.append((f"presenter, {name}", user, name, site, "presenter"))
    people.append(("reviewer, Reviewer (Roubaix)", "reviewer-roubaix", "Reviewer (Roubaix)", "Roubaix", "reviewer"))
    for i in range(1, max(0, args.trainees) + 1):
        name = f"Trainee {i} (Mouscron)"
        people.append((f"trainee, read-only, {name}", f"trainee-{i}", name, "Mouscron", "viewer"))
    return people


def _token(args: argparse.Namespace) -> int:
    settings = Settings.from_env(os.environ, data=args.data, database_url=args.database_url)
    auth = TokenAuthenticator(settings.secret or asyncio.run(_stored_secret(settings)))
    slides: Any = "*" if args.slides.strip() == "*" else [s for s in args.slides.split(",") if s]
    ttl = args.ttl or settings.link_ttl
    print(auth.mint(user=args.user, name=args.name, site=args.site, role=args.role, slides=slides, ttl=ttl))
    return 0


async def _stored_secret(settings: Settings) -> str:
    """The generated secret the server uses: a file under --data (SQLite: read without opening
    the store, so a wrong --data creates nothing) or the database's (PostgreSQL)."""
    from collab.store import is_postgres_url, open_store

    if not is_postgres_url(settings.database_url or ""):
        return load_secret(None, settings.data)
    async with open_store(settings) as store:
        return await signing_secret(None, store)


def _serve(args: argparse.Namespace) -> int:
    from collab.app import create_app
    from collab.log import configure_logging, install_crash_reporting, report_loop_exceptions
    from collab.server import build_server

    overrides = {
        k: getattr(args, k)
        for k in ("host", "port", "data", "demo", "public_url", "database_url", "redis_url", "deflate", "log_level")
    }
    settings = Settings.from_env(os.environ, **overrides)
    configure_logging(settings.log_level)
    install_crash_reporting()
    app = create_app(settings)
    server = build_server(app, settings)

    async def serve() -> None:
        report_loop_exceptions(asyncio.get_running_loop())
        await server.serve()

    # As uvicorn's own Server.run, with the loop it picks (uvloop when installed).
    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
