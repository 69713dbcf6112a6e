"""The ``clipper`` command: run and manage a local cluster from a shell.

    clipper start                          # Redis + frontends on 127.0.0.1:1337/1338/7000, in the background
    clipper deploy sum-model --version 1 --input-type doubles --predict mymodule:feature_sum \\
        --app hello-world --slo-micros 100000 --default-output -1.0
    curl -X POST -d '{"input": [1.1, 2.2, 3.3]}' http://127.0.0.1:1337/hello-world/predict
    clipper status; clipper apps; clipper models; clipper logs ./clipper_logs
    clipper stop                           # the next start is empty; `clipper stop --keep-state` keeps the state
    clipper images list                    # Docker images (also: images build, images rm; see clipper.images)
    clipper k8s manifests --frontends 3    # Kubernetes YAML (also: manifests model, images, push-images)
    clipper --version

Every command takes ``--cluster-name`` (default ``$CLIPPER_CLUSTER`` or ``default-cluster``) and
``--cluster-dir`` (default ``/tmp/clipper-clusters/<cluster name>``); commands other than ``start`` connect
to the cluster recorded there.

``deploy --predict module:function`` imports the function here (the current directory is on the
import path) and deploys it as a Python closure (cloudpickle): a module that lives under the
current directory is pickled by value, so replicas do not need to import it; installed modules
are pickled by reference. ``deploy --model-path DIR`` deploys a directory holding ``func.pkl``.
``deploy --command "/path/to/container --flag"`` runs any program as the model's replicas (a model container
in another language, docs/containers.md), with Clipper's environment plus ``--env KEY=VALUE``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import cmdline, images
from ._version import __version__
from .exceptions import ClipperException
from .frontend.config import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_MANAGEMENT_PORT,
    DEFAULT_QUERY_PORT,
    DEFAULT_REDIS_PORT,
    DEFAULT_RPC_PORT,
)
from .k8s import cli as k8s_cli

if TYPE_CHECKING:  # imported when a command needs them, so that --help and --version answer at once
    from .admin.connection import ClipperConnection
    from .managers.local import LocalContainerManager


def _table(rows: list[list[str]], header: list[str]) -> str:
    if not rows:
        return ""
    cells = [header, *rows]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def _manager(args: argparse.Namespace, **ports: Any) -> LocalContainerManager:
    from .managers.local import LocalContainerManager

    return LocalContainerManager(cluster_name=args.cluster_name, cluster_dir=args.cluster_dir, **ports)


def _connection(cm: LocalContainerManager, **kwargs: Any) -> ClipperConnection:
    from .admin.connection import ClipperConnection

    return ClipperConnection(cm, **kwargs)


def _connect(args: argparse.Namespace) -> ClipperConnection:
    conn = _connection(_manager(args))
    conn.connect()
    return conn


def cmd_start(args: argparse.Namespace) -> int:
    cm = _manager(args, clipper_query_port=args.query_port, clipper_management_port=args.management_port,
                  clipper_rpc_port=args.rpc_port, redis_ip=args.redis_ip, redis_port=args.redis_port,
                  log_dir=args.log_dir, start_timeout=args.timeout, prometheus_port=args.prometheus_port,
                  use_prometheus=False if args.no_prometheus else None)
    conn = _connection(cm, health_check_timeout=args.timeout)
    conn.start_clipper(cache_size=args.cache_size)
    st = cm.status()
    print(f"Clipper cluster '{args.cluster_name}' is running")
    print(f"  query frontend:      http://{cm.get_query_addr()}  (model RPC on 127.0.0.1:{cm.rpc_port})")
    print(f"  management frontend: http://{cm.get_admin_addr()}")
    redis = st["redis"]
    print(f"  redis:               {redis['host']}:{redis['port']}{'' if redis['managed'] else ' (external)'}")
    if st["metric_addr"]:
        print(f"  prometheus:          http://{st['metric_addr']}")
    print(f"  logs:                {st['log_dir']}")
    print(f"Stop it with: clipper --cluster-name {args.cluster_name} stop")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    cm = _manager(args)
    running = cm.status()["processes"]
    _connection(cm).stop_all(graceful=not args.force, keep_state=args.keep_state)
    if running:
        kept = f"; its state is kept in {cm.redis_data_dir}" if args.keep_state and cm.redis_data_dir.is_dir() else ""
        print(f"Stopped Clipper cluster '{args.cluster_name}'{kept}")
    else:
        print(f"No Clipper cluster '{args.cluster_name}' was running")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    st = _manager(args).status()
    if not st["processes"]:
        print(f"Clipper cluster '{args.cluster_name}' is not running (no {st['state_path']})")
        return 1
    state = "running" if st["running"] else "NOT HEALTHY (a process died; see its log, then `clipper stop`)"
    print(f"Clipper cluster '{args.cluster_name}': {state}")
    print(f"  query frontend: http://{st['query_addr']}   management frontend: http://{st['admin_addr']}"
          + (f"   prometheus: http://{st['metric_addr']}" if st["metric_addr"] else ""))
    rows = [[r["role"], str(r["pid"]), "alive" if r["alive"] else "DEAD", r["log"]] for r in st["processes"]]
    if st.get("prometheus"):
        prom = st["prometheus"]
        rows.append(["prometheus", str(prom["pid"]), "alive" if prom["alive"] else "DEAD", prom["log"]])
    rows += [[f"model {r['name']}:{r['version']}", str(r["pid"]), "alive" if r["alive"] else "DEAD", r["log"]]
             for r in st["replicas"]]
    print(_table(rows, ["PROCESS", "PID", "STATE", "LOG"]))
    return 0 if st["running"] else 1


def cmd_apps(args: argparse.Namespace) -> int:
    apps = _connect(args).get_all_apps(verbose=True)
    if args.json:
        print(json.dumps(apps, indent=2))
        return 0
    if not apps:
        print("No applications")
        return 0
    rows = [[a["name"], a["input_type"], str(a["latency_slo_micros"]), a["default_output"],
             ",".join(a.get("linked_models") or []) or "-"] for a in sorted(apps, key=lambda a: a["name"])]
    print(_table(rows, ["NAME", "INPUT TYPE", "SLO (us)", "DEFAULT OUTPUT", "LINKED MODEL"]))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    conn = _connect(args)
    models = conn.get_all_models(verbose=True)
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    if not models:
        print("No models")
        return 0
    rows = []
    for m in sorted(models, key=lambda m: (m["model_name"], m["model_version"])):
        replicas = conn.cm.get_num_replicas(m["model_name"], m["model_version"])
        rows.append([m["model_name"], m["model_version"], "yes" if m["is_current_version"] else "",
                     m["input_type"], str(replicas), m["container_name"]])
    print(_table(rows, ["NAME", "VERSION", "CURRENT", "INPUT TYPE", "REPLICAS", "IMAGE"]))
    return 0


def load_predict_function(spec: str) -> Any:
    """Imports ``module:function``; a module under the current directory is marked pickle-by-value."""
    import cloudpickle

    from .model_runtime.loader import ModelLoadError, load_function

    if ":" not in spec:
        raise ClipperException(f"--predict must look like module:function, got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        func = load_function(spec)
    except ModelLoadError as e:
        raise ClipperException(str(e)) from e
    module = sys.modules[spec.partition(":")[0]]
    path = getattr(module, "__file__", None)
    if path and Path(path).resolve().is_relative_to(Path(cwd).resolve()):
        cloudpickle.register_pickle_by_value(module)
    return func


def cmd_deploy(args: argparse.Namespace) -> int:
    from .deployers import python as python_deployer

    if args.env and not args.command:
        raise ClipperException("--env goes with --command (a Python model reads its environment from the image)")
    if args.pkg and args.command:
        raise ClipperException("--pkg does not go with --command (nothing is installed for a command)")
    conn = _connect(args)
    if args.command:
        from .deployers import command as command_deployer

        command_deployer.deploy_command(conn, args.name, args.version, args.input_type, args.command,
                                        num_replicas=args.replicas, env=dict(args.env or []), labels=args.label,
                                        batch_size=args.batch_size)
    elif args.predict:
        func = load_predict_function(args.predict)
        python_deployer.deploy_python_closure(conn, args.name, args.version, args.input_type, func,
                                              labels=args.label, num_replicas=args.replicas,
                                              batch_size=args.batch_size, pkgs_to_install=args.pkg)
    else:
        conn.build_and_deploy_model(args.name, args.version, args.input_type, args.model_path,
                                    python_deployer.default_base_image(), labels=args.label,
                                    num_replicas=args.replicas, batch_size=args.batch_size,
                                    pkgs_to_install=args.pkg)
    print(f"Deployed model {args.name}:{args.version} ({args.replicas} replica(s)); it is the current version")
    if args.app:
        if conn.get_app_info(args.app) is None:
            conn.register_application(args.app, args.input_type, args.default_output, args.slo_micros)
            print(f"Registered application {args.app} (input type {args.input_type}, SLO {args.slo_micros} us, "
                  f"default output {args.default_output!r})")
        if args.name not in conn.get_linked_models(args.app):
            conn.link_model_to_app(args.app, args.name)
        print(f"Application {args.app} is served by {args.name}: POST http://{conn.get_query_addr()}/{args.app}/predict")
    return 0


def cmd_set_version(args: argparse.Namespace) -> int:
    conn = _connect(args)
    conn.set_model_version(args.name, args.version)
    print(f"Model {args.name} now serves version {args.version}")
    return 0


def cmd_replicas(args: argparse.Namespace) -> int:
    conn = _connect(args)
    version = args.version or conn.get_current_model_version(args.name)
    conn.set_num_replicas(args.name, args.num_replicas, version)
    print(f"Model {args.name}:{version} has {conn.get_num_replicas(args.name, version)} replica(s)")
    return 0


def cmd_stop_model(args: argparse.Namespace) -> int:
    conn = _connect(args)
    if args.version:
        conn.stop_versioned_models({args.name: args.version})
        print(f"Stopped and removed {args.name} version(s) {', '.join(args.version)}")
    else:
        conn.stop_models([args.name])
        print(f"Stopped and removed every version of {args.name}")
    return 0


def cmd_register_app(args: argparse.Namespace) -> int:
    conn = _connect(args)
    conn.register_application(args.name, args.input_type, args.default_output, args.slo_micros)
    print(f"Registered application {args.name}")
    return 0


def cmd_unregister_app(args: argparse.Namespace) -> int:
    _connect(args).unregister_application(args.name)
    print(f"Unregistered application {args.name}")
    return 0


def cmd_link(args: argparse.Namespace) -> int:
    conn = _connect(args)
    if args.unlink:
        conn.unlink_model_from_app(args.app, args.model)
        print(f"Unlinked model {args.model} from application {args.app}")
    else:
        conn.link_model_to_app(args.app, args.model)
        print(f"Linked model {args.model} to application {args.app}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import requests

    conn = _connect(args)
    try:
        value = json.loads(args.input)
    except ValueError as e:
        raise ClipperException(f"INPUT must be JSON, e.g. '[1.0, 2.0]': {e}") from e
    key = "input_batch" if args.batch else "input"
    r = requests.post(f"http://{conn.get_query_addr()}/{args.app}/predict", json={key: value}, timeout=60)
    print(r.text if r.status_code == 200 else f"HTTP {r.status_code}: {r.text}")
    return 0 if r.status_code == 200 else 1


def cmd_logs(args: argparse.Namespace) -> int:
    cm = _manager(args)
    paths = cm.get_logs(args.dir)
    if not paths:
        print(f"No logs for cluster '{args.cluster_name}' in {cm.log_dir}")
        return 1
    for p in paths:
        print(p)
    return 0


def _key_value(text: str) -> tuple[str, str]:
    """``--env KEY=VALUE``."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _batch_size(text: str) -> int:
    """``--batch-size``: -1 (adaptive) or at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value != -1 and value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a batch size (-1: adaptive, or at least 1)")
    return value


def _cmd_images(args: argparse.Namespace) -> int:
    return images.run(args)


def _cmd_k8s(args: argparse.Namespace) -> int:
    return k8s_cli.run(args)


def build_parser() -> argparse.ArgumentParser:
    """The ``clipper`` command's parser (every option's help shows its default: `cmdline.HelpFormatter`)."""
    parser = cmdline.ArgumentParser(prog="clipper", description=__doc__.split("\n\n")[0],
                                    epilog="Run `clipper COMMAND --help` for a command's options.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="print the version and exit")
    parser.add_argument("--cluster-name", default=os.environ.get("CLIPPER_CLUSTER", "default-cluster"),
                        help="cluster name (default: $CLIPPER_CLUSTER, else default-cluster)")
    parser.add_argument("--cluster-dir", default=None, help="state directory (default: /tmp/clipper-clusters/NAME)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is being done; show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("start", help="start a local cluster (Redis and both frontends) in the background")
    p.add_argument("--query-port", type=cmdline.port, default=DEFAULT_QUERY_PORT, help="query frontend HTTP port")
    p.add_argument("--management-port", type=cmdline.port, default=DEFAULT_MANAGEMENT_PORT,
                   help="management frontend HTTP port")
    p.add_argument("--rpc-port", type=cmdline.port, default=DEFAULT_RPC_PORT, help="port model replicas connect to")
    p.add_argument("--redis-port", type=cmdline.port, default=DEFAULT_REDIS_PORT, help="Redis port")
    p.add_argument("--redis-ip", default=None, help="use the Redis running there instead of starting one")
    p.add_argument("--prometheus-port", type=cmdline.port, default=9090,  # managers.prometheus.DEFAULT_PROMETHEUS_PORT
                   help="Prometheus's port (0 or taken: a free one)")
    p.add_argument("--no-prometheus", action="store_true",
                   help="start no Prometheus server (by default one runs when the `prometheus` binary is installed)")
    p.add_argument("--cache-size", type=cmdline.non_negative_int, default=DEFAULT_CACHE_BYTES,
                   help="prediction cache size in bytes")
    p.add_argument("--log-dir", default=None, help="where the processes' logs go (default: CLUSTER_DIR/logs)")
    p.add_argument("--timeout", type=cmdline.positive_float, default=60.0, help="seconds to wait for each process")
    p.set_defaults(func=cmd_start)

    p = sub.add_parser("stop", help="stop every process of the cluster (and forget its state, unless --keep-state)")
    p.add_argument("--force", action="store_true", help="SIGKILL at once instead of SIGTERM")
    p.add_argument("--keep-state", action="store_true",
                   help="keep Redis's data (apps, models, links, selection state) and the list of running replicas: "
                        "the next `clipper start` comes back with them")
    p.set_defaults(func=cmd_stop)

    sub.add_parser("status", help="show the cluster's processes").set_defaults(func=cmd_status)

    for name, func, what in (("apps", cmd_apps, "applications"), ("models", cmd_models, "model versions")):
        p = sub.add_parser(name, help=f"list {what}")
        p.add_argument("--json", action="store_true", help="print the management API's JSON")
        p.set_defaults(func=func)

    p = sub.add_parser("deploy", help="deploy a Python function, a func.pkl directory or any container command "
                                      "as a model")
    p.add_argument("name", help="model name")
    p.add_argument("--version", default="1", help="model version")
    _input_type_arg(p, "input type of the model (and of a new --app)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--predict", metavar="MODULE:FUNCTION", help="function taking a batch of inputs")
    source.add_argument("--model-path", metavar="DIR", help="directory holding func.pkl")
    source.add_argument("--command", metavar="COMMAND LINE",
                        help="any model container program (split like a shell would; docs/containers.md)")
    p.add_argument("--env", action="append", type=_key_value, default=None, metavar="KEY=VALUE",
                   help="environment of a --command's replicas (repeatable)")
    p.add_argument("--replicas", type=cmdline.non_negative_int, default=1, help="replicas to start")
    p.add_argument("--batch-size", type=_batch_size, default=-1, help="fixed batch size (-1: adaptive)")
    p.add_argument("--label", action="append", default=None, help="label of the model (repeatable)")
    p.add_argument("--pkg", action="append", default=None,
                   help="pip package to install into the model image (repeatable)")
    p.add_argument("--app", help="also serve it from this application (registered if missing, then linked)")
    p.add_argument("--slo-micros", type=cmdline.positive_int, default=100000, help="latency objective of a new --app")
    p.add_argument("--default-output", default="None", help="default output of a new --app")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("set-version", help="make a registered version current (roll back or forward)")
    p.add_argument("name", help="model name")
    p.add_argument("version", help="a registered version of it")
    p.set_defaults(func=cmd_set_version)

    p = sub.add_parser("replicas", help="set a model version's number of replicas")
    p.add_argument("name", help="model name")
    p.add_argument("num_replicas", type=cmdline.non_negative_int, help="replicas wanted")
    p.add_argument("--version", help="model version (default: the current version)")
    p.set_defaults(func=cmd_replicas)

    p = sub.add_parser("stop-model", help="stop a model's replicas and unregister its versions")
    p.add_argument("name", help="model name")
    p.add_argument("--version", action="append", help="only this version (repeatable; default: every version)")
    p.set_defaults(func=cmd_stop_model)

    p = sub.add_parser("register-app", help="register an application")
    p.add_argument("name", help="application name")
    _input_type_arg(p, "input type of the application")
    p.add_argument("--slo-micros", type=cmdline.positive_int, default=100000, help="latency objective")
    p.add_argument("--default-output", default="None", help="answer when no model answers within the objective")
    p.set_defaults(func=cmd_register_app)

    p = sub.add_parser("unregister-app", help="remove an application")
    p.add_argument("name", help="application name")
    p.set_defaults(func=cmd_unregister_app)

    p = sub.add_parser("link", help="link a model to an application")
    p.add_argument("app", help="application name")
    p.add_argument("model", help="model name")
    p.add_argument("--unlink", action="store_true", help="remove the link instead")
    p.set_defaults(func=cmd_link)

    p = sub.add_parser("predict", help="ask an application for a prediction")
    p.add_argument("app", help="application name")
    p.add_argument("input", help="JSON input, e.g. '[1.0, 2.0]'")
    p.add_argument("--batch", action="store_true", help="INPUT is a list of inputs (input_batch)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("logs", help="copy the cluster's log files into DIR")
    p.add_argument("dir", nargs="?", default="clipper_logs", help="destination directory")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("images", help="build, list or remove the Docker images (same as python -m clipper.images)",
                       description=images.DESCRIPTION)
    images.add_arguments(p)
    p.set_defaults(func=_cmd_images)

    p = sub.add_parser("k8s", help="Kubernetes: print the cluster's manifests, list or push its images",
                       description=k8s_cli.DESCRIPTION)
    k8s_cli.add_arguments(p)
    p.set_defaults(func=_cmd_k8s)
    return parser


def _input_type_arg(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--input-type", type=cmdline.input_type, choices=cmdline.INPUT_TYPES, default="doubles",
                   help=f"{help}; Clipper's aliases (d, ints, ...) work too")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # its errors reach the user as "clipper: error: ..." already
        logging.getLogger("clipper.admin").setLevel(logging.CRITICAL)
    try:
        return args.func(args)
    except ClipperException as e:
        print(f"clipper: error: {e.msg}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a failure (no engine, a refused connection, ...), not a bug to show at length
        if args.verbose:
            raise
        print(f"clipper: error: {type(e).__name__}: {e} (-v shows the traceback)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
