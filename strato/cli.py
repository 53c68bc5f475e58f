"""The ``strato`` command: serve, bootstrap, db, worker, config, policy."""

from __future__ import annotations

import argparse
import logging
import os
import re
import secrets
import sys
from pathlib import Path

from strato import __version__
from strato.config import Config, ConfigError, load, sample

LOG = logging.getLogger("strato")


class RedactTokens(logging.Filter):
    """Console URLs carry their token in the query (uvicorn logs each websocket's
    path): the log shows ``token=***``, as only the token's hash is kept anywhere."""

    PATTERN = re.compile(r"([?&]token=)[^\s&\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "token=" in message:
            record.msg, record.args = self.PATTERN.sub(r"\1***", message), None
        return True


def setup_logging(conf: Config, debug: bool = False) -> None:
    level = logging.DEBUG if (debug or conf.DEFAULT.debug) else logging.INFO
    handler: logging.Handler = (
        logging.FileHandler(conf.DEFAULT.log_file) if conf.DEFAULT.log_file
        else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(process)d %(levelname)s %(name)s %(message)s"))
    handler.addFilter(RedactTokens())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access", "sqlalchemy", "alembic", "oslo_policy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _conf(args: argparse.Namespace) -> Config:
    overrides = []
    if getattr(args, "port", None) is not None:
        overrides.append(("DEFAULT", "bind_port", str(args.port)))
    if getattr(args, "host", None):
        overrides.append(("DEFAULT", "bind_host", args.host))
    path = args.config or os.environ.get("STRATO_CONFIG")
    return load(path, overrides)


# ---------------------------------------------------------------- commands
def cmd_init(args: argparse.Namespace) -> int:
    """Write a strato.conf for a state directory (kept if it exists)."""
    state = Path(args.state_path).resolve()
    state.mkdir(parents=True, exist_ok=True)
    path = Path(args.config) if args.config else state / "strato.conf"
    if path.exists() and not args.force:
        print(f"{path} exists; kept")
        return 0
    overrides = {("DEFAULT", "state_path"): str(state)}
    if args.port is not None:
        overrides[("DEFAULT", "bind_port")] = str(args.port)
    path.write_text(sample(overrides))
    print(f"wrote {path}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from strato.server import serve

    conf = _conf(args)
    setup_logging(conf, args.debug)
    return serve(conf, compute=not args.no_compute)


def cmd_worker(args: argparse.Namespace) -> int:
    from strato.server import run_worker

    conf = _conf(args)
    setup_logging(conf, args.debug)
    return run_worker(conf, args.target or None)


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from strato.db import Database
    from strato.identity.bootstrap import bootstrap

    conf = _conf(args)
    setup_logging(conf)
    password = args.bootstrap_password or os.environ.get("STRATO_BOOTSTRAP_PASSWORD")
    secret_file = conf.DEFAULT.state_path / "admin-password"
    if not password:
        if secret_file.exists():
            password = secret_file.read_text().strip()
        else:
            password = secrets.token_urlsafe(18)
    _check_schema(conf)
    db = Database.from_config(conf)
    try:
        ids = bootstrap(db, password, project=args.bootstrap_project_name,
                        user=args.bootstrap_username, reset_password=args.reset_password)
        from strato.network.bootstrap import bootstrap_public_network

        public = bootstrap_public_network(db, conf, ids["project_id"])
        if public:
            print(f"external network {conf.network.public_network} ({public}) on "
                  f"{conf.network.public_cidr}")
    finally:
        db.dispose()
    conf.DEFAULT.state_path.mkdir(parents=True, exist_ok=True)
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    if args.clouds_yaml != "none":
        from strato.clouds import write_cloud

        where = write_cloud(
            Path(args.clouds_yaml).expanduser(), args.cloud_name,
            auth_url=f"{conf.public_endpoint}/identity", username=args.bootstrap_username,
            password=password, project_name=args.bootstrap_project_name,
            region=conf.DEFAULT.region_name,
        )
        print(f"clouds.yaml entry '{args.cloud_name}' written to {where}")
    print(f"admin user {ids['user_id']} in project {ids['project_id']}; "
          f"password in {secret_file}")
    return 0


def _check_schema(conf: Config) -> None:
    from strato.db import migrate

    url = conf.database.connection
    have, want = migrate.current(url), migrate.head()
    if have != want:
        raise ConfigError(f"the database is at revision {have or 'none'}, the code needs "
                          f"{want}: run `strato db upgrade`")


def cmd_db(args: argparse.Namespace) -> int:
    from strato.db import migrate

    conf = _conf(args)
    setup_logging(conf)
    url = conf.database.connection
    if args.db_command == "upgrade":
        migrate.upgrade(url, args.revision)
        print(f"database at revision {migrate.current(url)}")
    elif args.db_command == "downgrade":
        migrate.downgrade(url, args.revision)
        print(f"database at revision {migrate.current(url)}")
    else:
        print(f"current: {migrate.current(url) or 'none'}  head: {migrate.head()}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.config_command == "sample":
        sys.stdout.write(sample())
    else:
        conf = _conf(args)
        if args.config:
            print(f"configuration file {conf.source.resolve()} is valid")
        elif conf.source is not None:
            print(f"configuration file {conf.source.resolve()} (from $STRATO_CONFIG) is valid")
        else:
            print("no configuration file given (neither --config nor $STRATO_CONFIG): "
                  "only the built-in defaults were checked, and they are valid")
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    """Notifications kept in the database, newest last."""
    import json as _json

    from sqlalchemy import select

    from strato.db import Database
    from strato.events import Event

    conf = _conf(args)
    db = Database.from_config(conf)
    try:
        with db.session(readonly=True) as session:
            query = select(Event).order_by(Event.id.desc()).limit(args.limit)
            if args.service:
                query = query.where(Event.service == args.service)
            if args.resource:
                query = query.where(Event.resource_id == args.resource)
            if args.type:
                query = query.where(Event.event_type.startswith(args.type))
            rows = list(session.scalars(query))
        for ev in reversed(rows):
            print(f"{ev.created_at.isoformat()} {ev.service} {ev.event_type} "
                  f"{ev.resource_id} project={ev.project_id} {_json.dumps(ev.payload)}")
    finally:
        db.dispose()
    return 0


def cmd_guest(args: argparse.Namespace) -> int:
    """Build the tiny test guest and register it as images (kernel, ramdisk, disk)."""
    from strato.compute.guestimage import register
    from strato.service import Services

    conf = _conf(args)
    setup_logging(conf)
    _check_schema(conf)
    services = Services.build(conf)
    try:
        image_id = register(services, args.name, force=args.force)
    finally:
        services.close()
    print(f"image {args.name}: {image_id}")
    return 0


def cmd_cloud_image(args: argparse.Namespace) -> int:
    """Build (or reuse) the Debian cloud image; optionally register it as an image."""
    from pathlib import Path

    from strato.virt.cloudimage import build, describe

    conf = _conf(args) if (args.register or args.dest is None) else None
    dest = Path(args.dest) if args.dest else Path(conf.DEFAULT.state_path) / "cloud-image"
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if args.verbose else None
    image = build(dest, force=args.force, **({"log": log} if log else {}))
    describe(image)
    if args.register:
        from strato.compute.cloudimage import register
        from strato.service import Services

        assert conf is not None
        setup_logging(conf)
        _check_schema(conf)
        services = Services.build(conf)
        try:
            image_id, new = register(services, image, args.name, force=args.force)
        finally:
            services.close()
        print(f"image {args.name}: {image_id}" + ("" if new else " (already registered)"))
    return 0


def cmd_network(args: argparse.Namespace) -> int:
    """``strato network teardown``: remove every namespace, device, rule and dnsmasq of
    this deployment (its ``[network] dataplane_id``), e.g. after a crash or before
    deleting the state directory.  The database is not touched: the next ``strato
    serve`` builds again what its tables say."""
    conf = _conf(args)
    setup_logging(conf)
    try:
        from strato.network.dataplane import DataplaneUnavailable
        from strato.network.linux import LinuxDataplane
    except ImportError as exc:  # pragma: no cover - a partial install
        print(f"strato: the Linux data plane is not available: {exc}", file=sys.stderr)
        return 1
    try:
        LinuxDataplane(conf).teardown()
    except DataplaneUnavailable as exc:
        print(f"strato: cannot tear the network down here: {exc}", file=sys.stderr)
        return 1
    print("network data plane torn down")
    return 0


def cmd_policy(args: argparse.Namespace) -> int:
    from strato.policy import Enforcer

    sys.stdout.write(Enforcer("").defaults_yaml())
    return 0


# ---------------------------------------------------------------- parser
def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="strato",
        description="strato: an OpenStack-compatible cloud (identity, compute, image, "
                    "block storage) in one process or many.",
    )
    top.add_argument("--version", action="version", version=f"strato {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, fn, help_: str) -> argparse.ArgumentParser:  # type: ignore[no-untyped-def]
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--config", "-c", metavar="FILE",
                       help="strato.conf to read (default: $STRATO_CONFIG, else built-in "
                            "defaults)")
        p.set_defaults(func=fn)
        return p

    p = command("init", cmd_init, "Write a documented strato.conf for a state directory.")
    p.add_argument("--state-path", required=True, help="directory for all local state")
    p.add_argument("--port", type=int, help="API port to write into the file")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")

    p = command("serve", cmd_serve,
                "Run the API and, in the same process, the job workers (embedded default).")
    p.add_argument("--port", type=int, help="override [DEFAULT] bind_port")
    p.add_argument("--host", help="override [DEFAULT] bind_host")
    p.add_argument("--no-compute", action="store_true",
                   help="no compute agent here: this host runs no guests (scale-out, "
                   "with `strato worker` on the compute hosts)")
    p.add_argument("--debug", action="store_true", help="log at DEBUG level")

    p = command("worker", cmd_worker, "Run job workers only (scale-out: one per host or "
                                      "backend).")
    p.add_argument("--target", action="append",
                   help="job target to serve (repeatable; default: 'any' and this host's)")
    p.add_argument("--debug", action="store_true", help="log at DEBUG level")

    p = command("bootstrap", cmd_bootstrap,
                 "Create the Default domain, the admin project and user, and the roles "
                 "admin/member/reader (idempotent); write a clouds.yaml entry.")
    p.add_argument("--bootstrap-password", help="admin password (default: "
                   "$STRATO_BOOTSTRAP_PASSWORD, the saved one, or a new random one)")
    p.add_argument("--bootstrap-username", default="admin")
    p.add_argument("--bootstrap-project-name", default="admin")
    p.add_argument("--reset-password", action="store_true",
                   help="set the password of an existing admin user")
    p.add_argument("--clouds-yaml", default="~/.config/openstack/clouds.yaml",
                   help="clouds.yaml to add the entry to ('none' to skip)")
    p.add_argument("--cloud-name", default="strato")

    p = command("db", cmd_db, "Database schema migrations (Alembic).")
    dbsub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = dbsub.add_parser("upgrade", help="migrate to the newest schema (or REVISION)")
    up.add_argument("revision", nargs="?", default="head")
    down = dbsub.add_parser("downgrade", help="migrate back to REVISION ('base': empty)")
    down.add_argument("revision")
    cur = dbsub.add_parser("current", help="show the schema revision")
    for nested in (up, down, cur):
        nested.add_argument("--config", "-c", metavar="FILE", default=argparse.SUPPRESS,
                            help="strato.conf to read")

    p = command("config", cmd_config, "Configuration: print a documented sample, or check "
                                      "a file.")
    p.add_argument("config_command", choices=("sample", "check"))

    p = command("events", cmd_events, "List notifications (volume.create.end, …), newest last.")
    p.add_argument("--service", help="only this service's (volume, compute, image)")
    p.add_argument("--resource", help="only events about this resource id")
    p.add_argument("--type", help="only event types starting with this (e.g. snapshot.)")
    p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")

    p = command("guest", cmd_guest, "Build strato's tiny test guest from Debian packages and "
                                    "register it as images (kernel, ramdisk, raw disk).")
    p.add_argument("--name", default="strato-guest", help="name of the disk image")
    p.add_argument("--force", action="store_true", help="register again even if it exists")

    p = command("cloud-image", cmd_cloud_image,
                "Build a Debian cloud image (qcow2: BIOS and UEFI boot, cloud-init, "
                "openssh-server, qemu-guest-agent) from Debian's packages with mmdebstrap, "
                "cached by its inputs; optionally register it as a public image.")
    p.add_argument("--dest", metavar="DIR", help="cache directory (default: "
                   "<state_path>/cloud-image)")
    p.add_argument("--register", action="store_true",
                   help="upload it as a public qcow2 image (see --name)")
    p.add_argument("--name", default="strato-cloud", help="image name for --register")
    p.add_argument("--force", action="store_true",
                   help="build again even if cached (and register again)")
    p.add_argument("--verbose", "-v", action="store_true", help="print each build command")

    p = command("network", cmd_network, "The network data plane of this host.")
    p.add_argument("network_command", choices=("teardown",),
                   help="teardown: remove every namespace, bridge, tap, veth, nftables "
                        "table and dnsmasq this deployment made (the database is kept)")

    command("policy", cmd_policy, "Print every default policy rule, ready to override in a "
                                  "policy file.")

    from strato.schedule_cli import add_parser as add_schedule_parser

    add_schedule_parser(sub)  # API commands, with the user's credentials (OS_CLOUD, OS_*)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"strato: configuration error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"strato: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before a command set up its own shutdown
        print("strato: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
