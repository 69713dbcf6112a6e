"""``clipper k8s``: the cluster's Kubernetes objects as YAML, and the images they name.

    clipper k8s manifests --frontends 3 > clipper.yaml       # Secret, Redis, both frontends, the Services
    clipper k8s manifests model --name sum --version 1 --image REG/default-cluster-sum:1 --gpus 1 > sum.yaml
    clipper k8s images --registry registry.example.com/team   # the images the manifests name, and where from
    clipper k8s push-images --registry registry.example.com/team

The YAML is what `KubernetesContainerManager` creates (`clipper.k8s.objects`), for ``kubectl apply -f``, Helm
or GitOps. ``--cluster-name`` (before ``k8s``) names the objects, as the manager's `cluster_name`.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shlex
import sys
from typing import Any

from .. import cmdline
from .._version import __version__
from ..exceptions import ClipperException
from ..frontend.config import DEFAULT_CACHE_BYTES, DEFAULT_REDIS_PORT
from . import objects as k8s

DESCRIPTION = __doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1]

_SERVICE_TYPES = tuple(k8s.SERVICE_TYPES)


def quantity(text: str) -> str:
    """``--cpu`` and friends: a Kubernetes quantity."""
    try:
        return k8s.check_quantity(text, "")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).strip()) from None


def dns_label(text: str) -> str:
    if not k8s.is_dns_label(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a DNS-1123 label (lower-case letters, digits and '-', "
                                         "at most 63 characters)")
    return text


def service_type(text: str) -> str:
    """ClusterIP, NodePort or LoadBalancer, in any case."""
    for t in _SERVICE_TYPES:
        if t.lower() == text.lower():
            return t
    raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(_SERVICE_TYPES)}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``clipper k8s`` subcommands."""
    sub = parser.add_subparsers(dest="k8s_command", metavar="COMMAND", required=True)

    p = sub.add_parser("manifests", help="print the cluster's (or a model's) Kubernetes objects as YAML",
                       description="Prints multi-document YAML for `kubectl apply -f -`: the cluster (default) or "
                                   "one model version's Deployment.")
    p.add_argument("what", nargs="?", choices=("cluster", "model"), default="cluster", help="which objects")
    p.add_argument("--namespace", type=dns_label, default="default", help="namespace of the objects")
    p.add_argument("--registry", default=None,
                   help="registry this project's images were pushed to (clipper k8s push-images); default: none, "
                        "the nodes must have them (kind load docker-image)")
    p.add_argument("--pull-policy", choices=("IfNotPresent", "Always", "Never"), default="IfNotPresent",
                   help="imagePullPolicy of every container")
    p.add_argument("--cluster-domain", default="cluster.local", help="the cluster's DNS domain")
    c = p.add_argument_group("cluster (manifests cluster)")
    c.add_argument("--frontends", type=cmdline.positive_int, default=1, help="query frontend replicas")
    c.add_argument("--query-service", type=service_type, choices=_SERVICE_TYPES, default=k8s.NODE_PORT,
                   help="type of the query frontends' Service (port 1337)")
    c.add_argument("--management-service", type=service_type, choices=_SERVICE_TYPES, default=k8s.NODE_PORT,
                   help="type of the management frontend's Service (port 1338)")
    c.add_argument("--redis-service", type=service_type, choices=_SERVICE_TYPES, default=k8s.CLUSTER_IP,
                   help="type of Redis's Service (Redis has no password)")
    c.add_argument("--redis-ip", default=None, help="use this Redis instead of deploying one")
    c.add_argument("--redis-port", type=cmdline.port, default=DEFAULT_REDIS_PORT, help="Redis's port")
    c.add_argument("--redis-storage", type=quantity, default="1Gi", help="size of Redis's volume claim")
    c.add_argument("--storage-class", default=None, help="storage class of Redis's volume claim (default: the "
                                                         "cluster's default class)")
    c.add_argument("--no-redis-persistence", action="store_true", help="Redis in memory: no volume claim")
    c.add_argument("--cache-size", type=cmdline.non_negative_int, default=DEFAULT_CACHE_BYTES,
                   help="prediction cache size in bytes")
    c.add_argument("--insecure", action="store_true",
                   help="serve predictions without a bearer token (the management API always requires one)")
    c.add_argument("--no-secret", action="store_true",
                   help="leave out the tokens Secret (create it yourself: the output's first lines say how)")
    c.add_argument("--create-namespace", action="store_true", help="include the Namespace object")
    c.add_argument("--log-level", type=str.upper, choices=cmdline.LOG_LEVELS, default="INFO",
                   help="the frontends' log level")
    m = p.add_argument_group("model (manifests model)")
    m.add_argument("--name", type=dns_label, default=None, help="model name")
    m.add_argument("--version", type=dns_label, default="1", help="model version")
    m.add_argument("--image", default=None, help="the model's image (clipper/... images get --registry)")
    m.add_argument("--input-type", type=cmdline.input_type, choices=cmdline.INPUT_TYPES, default="doubles",
                   help="input type; Clipper's aliases (d, ints, ...) work too")
    m.add_argument("--replicas", type=cmdline.non_negative_int, default=1, help="replicas")
    m.add_argument("--cpu", type=quantity, default=None, help="CPU request, e.g. 500m")
    m.add_argument("--memory", type=quantity, default=None, help="memory request, e.g. 512Mi")
    m.add_argument("--cpu-limit", type=quantity, default=None, help="CPU limit")
    m.add_argument("--memory-limit", type=quantity, default=None, help="memory limit")
    m.add_argument("--gpus", type=cmdline.non_negative_int, default=0, help="GPUs (nvidia.com/gpu) per replica")
    m.add_argument("--no-metrics", action="store_true",
                   help="the image serves no GET /metrics on $CLIPPER_METRICS_PORT (Clipper's own containers)")
    p.set_defaults(k8s_func=cmd_manifests, k8s_parser=p)

    p = sub.add_parser("images", help="list the images the manifests name and the local images they come from")
    p.add_argument("--registry", default=None, help="registry the images are pushed to")
    p.set_defaults(k8s_func=cmd_images, k8s_parser=p)

    p = sub.add_parser("push-images", help="tag this project's local images for a registry and push them "
                                           "(docker login to it first)")
    p.add_argument("--registry", required=True, help="registry, e.g. registry.example.com/team or localhost:5001")
    p.add_argument("names", nargs="*", metavar="NAME", help="images (default: the cluster's: "
                                                            f"{', '.join(k8s.CLUSTER_IMAGES)})")
    p.set_defaults(k8s_func=cmd_push_images, k8s_parser=p)


_CLUSTER_FLAGS = ("frontends", "query_service", "management_service", "redis_service", "redis_ip", "redis_port",
                  "redis_storage", "storage_class", "no_redis_persistence", "cache_size", "insecure", "no_secret",
                  "create_namespace", "log_level")
_MODEL_FLAGS = ("name", "version", "image", "input_type", "replicas", "cpu", "memory", "cpu_limit", "memory_limit",
                "gpus", "no_metrics")


def _given(args: argparse.Namespace, parser: argparse.ArgumentParser, names: tuple[str, ...]) -> list[str]:
    """The options among `names` that differ from their defaults, as their flags."""
    flags = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}
    return [flags[n] for n in names if getattr(args, n) != parser.get_default(n)]


def _spec(args: argparse.Namespace) -> k8s.ClusterSpec:
    try:
        return k8s.ClusterSpec(
            cluster_name=args.cluster_name, namespace=args.namespace, num_frontend_replicas=args.frontends,
            container_registry=args.registry, redis_ip=args.redis_ip, redis_port=args.redis_port,
            service_types={"query": args.query_service, "management": args.management_service,
                           "redis": args.redis_service},
            cache_size=args.cache_size, log_level=args.log_level, insecure=args.insecure,
            redis_persistence=not args.no_redis_persistence, redis_storage=args.redis_storage,
            storage_class=args.storage_class, image_pull_policy=args.pull_policy, cluster_domain=args.cluster_domain)
    except ValueError as e:
        raise ClipperException(str(e)) from e


def cluster_manifests(args: argparse.Namespace) -> str:
    spec = _spec(args)
    c = spec.cluster_name
    admin = None if args.no_secret else secrets.token_urlsafe(32)
    predict = None if args.no_secret or spec.insecure else secrets.token_urlsafe(32)
    objs = k8s.cluster_objects(spec, admin, predict)
    if args.create_namespace:
        objs.insert(0, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": spec.namespace}})
    images = sorted({ctr["image"] for o in objs if o["kind"] == "Deployment"
                     for ctr in o["spec"]["template"]["spec"]["containers"]})
    lines = [f"Clipper cluster '{c}' in the namespace '{spec.namespace}' (clipper-serving {__version__}): "
             f"{spec.num_frontend_replicas} query frontend(s), kubectl apply -f FILE",
             f"Images: {', '.join(images)}",
             "  the nodes pull them from --registry (clipper k8s push-images --registry REG), or load them first "
             "(kind load docker-image IMAGE)"]
    predict_arg = "" if spec.insecure else " --from-literal=predict-token=$(openssl rand -hex 32)"
    create = (f"kubectl -n {spec.namespace} create secret generic {k8s.secret_name(c)} "
              f"--from-literal=admin-token=$(openssl rand -hex 32){predict_arg}")
    if args.no_secret:
        lines.append(f"Tokens: create the Secret first: {create}")
    else:
        lines.append(f"The Secret {k8s.secret_name(c)} holds freshly drawn bearer tokens: keep this file private "
                     "(or print it with --no-secret and create the Secret yourself)")
    lines.append(f"Read them back: kubectl -n {spec.namespace} get secret {k8s.secret_name(c)} "
                 "-o jsonpath='{.data.admin-token}' | base64 -d")
    return k8s.to_yaml(objs, "\n".join(lines))


def model_manifests(args: argparse.Namespace) -> str:
    spec = _spec(args)
    try:
        model = k8s.ModelSpec(args.name, args.version, args.input_type, args.image, args.replicas,
                              k8s.Resources(cpu=args.cpu, memory=args.memory, cpu_limit=args.cpu_limit,
                                            memory_limit=args.memory_limit, gpus=args.gpus),
                              metrics=not args.no_metrics)
    except ValueError as e:
        raise ClipperException(str(e)) from e
    dep = k8s.model_deployment(spec, model)
    image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
    register = {"model_name": model.name, "model_version": model.version, "labels": ["DEFAULT"],
                "input_type": model.input_type, "container_name": image, "model_data_path": "DEPRECATED",
                "batch_size": -1}
    lines = [f"Model {model.name}:{model.version} of the Clipper cluster '{spec.cluster_name}' "
             f"(namespace '{spec.namespace}'): {model.num_replicas} replica(s); apply it after the cluster's "
             "manifests.",
             "Then register the version (it becomes the current one), e.g. through the management API:",
             "  curl -X POST -H \"Authorization: Bearer $ADMIN_TOKEN\" http://MGMT_ADDR/admin/add_model -d "
             + shlex.quote(json.dumps(register, separators=(",", ":"))),
             "or ClipperConnection(KubernetesContainerManager(...)).connect() and .register_model(...)"]
    return k8s.to_yaml([dep], "\n".join(lines))


def cmd_manifests(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.what == "model":
        wrong = _given(args, parser, _CLUSTER_FLAGS)
        if wrong:
            parser.error(f"{', '.join(wrong)}: option(s) of `manifests cluster`, not of `manifests model`")
        if not args.name or not args.image:
            parser.error("`manifests model` needs --name and --image")
        sys.stdout.write(model_manifests(args))
    else:
        wrong = _given(args, parser, _MODEL_FLAGS)
        if wrong:
            parser.error(f"{', '.join(wrong)}: option(s) of `manifests model` (add `model`)")
        sys.stdout.write(cluster_manifests(args))
    return 0


def cmd_images(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    for local, remote in ((k8s.default_image(n), k8s.cluster_image(k8s.default_image(n), args.registry))
                          for n in k8s.CLUSTER_IMAGES):
        print(local if local == remote else f"{local} -> {remote}")
    return 0


def cmd_push_images(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .. import images
    from .registry import PushError, push_cluster_images

    unknown = [n for n in args.names if n not in images.RECIPES]
    if unknown:
        parser.error(f"unknown image(s) {', '.join(unknown)}; known: {', '.join(images.RECIPES)}")
    try:
        client = images.docker_client()
    except images.ImageBuildError as e:
        raise ClipperException(str(e)) from e
    try:
        pushed = push_cluster_images(client, args.registry, args.names or k8s.CLUSTER_IMAGES, progress=print)
    except PushError as e:
        raise ClipperException(str(e)) from e
    print(f"Pushed {len(pushed)} image(s); print the manifests with --registry {args.registry}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Runs the ``clipper k8s`` subcommand `args` names."""
    func: Any = args.k8s_func
    return int(func(args, args.k8s_parser))
