"""Clipper's own integration tests (``integration-tests/clipper_admin_tests.py``), unmodified, on our Docker manager.

`CLIPPER_INTEGRATION_TESTS` names Clipper's ``integration-tests`` folder, or its ``clipper_admin_tests.py``
(``test_utils.py`` must sit next to it). Both files are copied into a temporary folder and run there by a
small driver in a child Python process, with ``tests/clipper_standin`` first on ``PYTHONPATH``: Clipper's
``import clipper_admin`` then finds the stand-in, which re-exports this project's `ClipperConnection`,
`DockerContainerManager`, deployers, exceptions and labels under Clipper's names
(``tests/clipper_standin/README.md``). Nothing of Clipper's is edited; the copy keeps Clipper's
``sys.path.insert(0, "<folder>/../clipper_admin")`` from reaching a real ``clipper_admin`` of a checkout.

Why a child process rather than importing the tests here: Clipper's module configures logging, inserts into
``sys.path`` and makes temporary folders at import, and its clusters and containers outlive a crash of the
interpreter; a child keeps this process clean and its log in one file. Why not Clipper's ``__main__``: it
runs with ``failfast=True`` (the first failure hides every later test) and prints no machine-readable
result. The driver builds the same suite in the same order, from the module's own ``SHORT_TEST_ORDERING``
then ``LONG_TEST_ORDERING``, runs it with `unittest` (``setUp``/``setUpClass`` as Clipper's runner does) and
writes one JSON record per test (outcome, seconds, traceback) as it goes. Tests Clipper defines but left out
of its orderings (``test_unlink_registered_model_from_app_succeeds``) run after those of their class.

Each Clipper test is one pytest test here (``-k`` selects which ones the child runs). Expected outcomes
that are Clipper's doing, not ours, are listed in `EXPECTED` and reported as xfail with the reason.
Afterwards the containers, volumes and networks of the run's clusters must be gone (Clipper's ``tearDown``
calls ``stop_all``); the model images Clipper's tests build (``<cluster>-<model>:<version>``, which Clipper
never removes) and its ``/tmp/clipper`` folders are removed here.

Clipper's tests find their containers with Docker's ``ancestor`` filter on image names such as
``clipper/noop-container:0.4.1``: an image rebuilt during the run (by another checkout on the same engine)
moves the tag and hides the containers started before; a failing test then says which tags moved. To pin
the images, tag them under another registry name and set Clipper's own ``CLIPPER_REGISTRY``
(``docs/compatibility.md`` has the commands).

Run (about 17 min: Clipper's tests sleep about 10 min in all)::

    git --git-dir=<clipper>/.git archive HEAD integration-tests | tar -x -C /tmp/clipper-it
    CLIPPER_INTEGRATION_TESTS=/tmp/clipper-it/integration-tests python3 -m pytest -v tests/test_clipper_integration.py
"""

from __future__ import annotations

import ast
import calendar
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import needs_docker

from clipper.admin.connection import CLIPPER_TEMP_DIR
from clipper.managers.base import CLIPPER_DOCKER_LABEL
from clipper.managers.docker import CLIPPER_NETWORK_LABEL

ENV = "CLIPPER_INTEGRATION_TESTS"
REPO = Path(__file__).resolve().parents[1]
STANDIN = Path(__file__).resolve().parent / "clipper_standin"
TEST_FILE, UTILS_FILE = "clipper_admin_tests.py", "test_utils.py"
CLASSES = {"Short": ("ClipperManagerTestCaseShort", "SHORT_TEST_ORDERING"),
           "Long": ("ClipperManagerTestCaseLong", "LONG_TEST_ORDERING")}
#: The whole child run (Clipper's tests sleep about 10 min; 21 short tests each start and stop a cluster).
RUN_TIMEOUT_S = 3600
#: Cluster names of Clipper's tests: ``admin-test-cluster-<n>`` (short), ``admin-l-<n>`` (long).
CLUSTER_RE = re.compile(r"admin-(?:test-cluster|l)-\d+")


@dataclass(frozen=True)
class Expected:
    """A Clipper test that cannot pass here for a reason of Clipper's: its error must match `error`."""

    error: str
    reason: str


_NO_CLOSURE_IMAGE = Expected(
    r"UnboundLocalError: .*'containers'",
    f"Clipper's test knows closure images only for Python 2.7, 3.5, 3.6 and 3.7 and reads an unbound "
    f"variable on Python {sys.version_info.major}.{sys.version_info.minor}; the deployment it checks had "
    "succeeded (get_model_info) before that line",
)
EXPECTED: dict[str, Expected] = {
    "test_python_closure_deploys_successfully": _NO_CLOSURE_IMAGE,
    "test_register_py_endpoint": _NO_CLOSURE_IMAGE,
    "test_build_model_with_custom_packages": Expected(
        r"Cannot make wheels of sympy",
        "needs PyPI: Clipper's test installs sympy==1.1.* into four model images",
    ),
}




def _clipper_folder() -> Path | None:
    """The folder holding Clipper's two files, from `ENV` (None: unset); a wrong path fails collection."""
    value = os.environ.get(ENV)
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    folder = path.parent if path.is_file() else path
    missing = [name for name in (TEST_FILE, UTILS_FILE) if not (folder / name).is_file()]
    if missing:
        pytest.fail(f"{ENV}={value}: no {' and no '.join(missing)} in {folder} (give Clipper's integration-tests "
                    f"folder or its {TEST_FILE})", pytrace=False)
    return folder


def _cases(test_file: Path) -> list[tuple[str, str, bool]]:
    """(class key, method, in Clipper's ordering) in Clipper's order, read from the file without running it."""
    tree = ast.parse(test_file.read_text(), str(test_file))
    orderings: dict[str, list[str]] = {}
    methods: dict[str, list[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id.endswith("_TEST_ORDERING"):
                orderings[node.targets[0].id] = list(ast.literal_eval(node.value))
        elif isinstance(node, ast.ClassDef):
            methods[node.name] = [f.name for f in node.body
                                  if isinstance(f, ast.FunctionDef) and f.name.startswith("test_")]
    cases = []
    for key, (cls, ordering) in CLASSES.items():
        ordered = orderings.get(ordering, [])
        cases += [(key, name, True) for name in ordered]
        cases += [(key, name, False) for name in methods.get(cls, []) if name not in ordered]
    return cases


_FOLDER = _clipper_folder()
if _FOLDER is None:
    pytest.skip(f"set {ENV} to Clipper's integration-tests folder (or its {TEST_FILE}) to run Clipper's own "
                "tests against the Docker manager; see this module's docstring", allow_module_level=True)
pytestmark = [pytest.mark.docker, pytest.mark.slow, needs_docker]
CASES = _cases(_FOLDER / TEST_FILE)


DRIVER = r'''
"""Runs Clipper's clipper_admin_tests.py (unmodified, next to this file) in Clipper's order; writes JSON results."""
import json
import sys
import time
import traceback
import unittest

import clipper_admin_tests  # Clipper's module; `clipper_admin` is the stand-in on PYTHONPATH

CLASSES = {"Short": clipper_admin_tests.ClipperManagerTestCaseShort,
           "Long": clipper_admin_tests.ClipperManagerTestCaseLong}
out_path, wanted = sys.argv[1], json.loads(sys.argv[2])
records = {"python": list(sys.version_info[:3]), "tests": {}, "class_errors": []}


def save():
    with open(out_path + ".tmp", "w") as f:
        json.dump(records, f, indent=1)
    import os
    os.replace(out_path + ".tmp", out_path)


class Recorder(unittest.TextTestResult):
    def startTest(self, test):
        super().startTest(test)
        self._t0 = time.monotonic()
        print(f"=== {test.id()}", flush=True)

    def _record(self, test, outcome, detail=""):
        name = getattr(test, "_testMethodName", None)
        if name is None:  # setUpClass / tearDownClass of a class: no test of its own
            records["class_errors"].append({"where": str(test), "traceback": detail})
        else:
            key = type(test).__name__.replace("ClipperManagerTestCase", "") + "::" + name
            records["tests"][key] = {"outcome": outcome, "seconds": round(time.monotonic() - self._t0, 1),
                                     "detail": detail}
        save()

    def addSuccess(self, test):
        super().addSuccess(test)
        self._record(test, "passed")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._record(test, "failed", "".join(traceback.format_exception(*err)))

    def addError(self, test, err):
        super().addError(test, err)
        self._record(test, "error", "".join(traceback.format_exception(*err)))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._record(test, "skipped", reason)


suite = unittest.TestSuite()
for key, name in wanted:
    suite.addTest(CLASSES[key](name))
save()
runner = unittest.TextTestRunner(verbosity=2, resultclass=Recorder, stream=sys.stdout)
result = runner.run(suite)
sys.exit(0 if result.wasSuccessful() else 1)
'''


@dataclass
class Run:
    """What the child run of Clipper's tests gave."""

    log: Path
    returncode: int | None
    seconds: float
    python: list[int] = field(default_factory=list)
    tests: dict[str, dict[str, Any]] = field(default_factory=dict)
    class_errors: list[dict[str, str]] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    #: ``clipper/*`` tags that pointed at another image at the end of the run than at its start
    moved_images: list[str] = field(default_factory=list)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as e:
            return f"(no log: {e})"


def _ours(labels: dict[str, str] | None, since: float, created: str) -> bool:
    """A Docker object of a cluster of Clipper's tests made by this run (label value and creation time)."""
    if not CLUSTER_RE.fullmatch((labels or {}).get(CLIPPER_DOCKER_LABEL, "")
                                or (labels or {}).get(CLIPPER_NETWORK_LABEL, "")):
        return False
    try:
        stamp = calendar.timegm(time.strptime(created[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return True
    return stamp >= since - 5


def _leftovers(client: Any, since: float, remove: bool) -> list[str]:
    """Containers, volumes and networks of this run's clusters still there (removed when `remove`)."""
    found = []
    for c in client.containers.list(all=True, filters={"label": CLIPPER_DOCKER_LABEL}):
        if _ours(c.labels, since, c.attrs.get("Created", "")):
            found.append(f"container {c.name}")
            if remove:
                c.remove(force=True, v=True)
    for v in client.volumes.list(filters={"label": CLIPPER_DOCKER_LABEL}):
        if _ours(v.attrs.get("Labels"), since, v.attrs.get("CreatedAt", "")):
            found.append(f"volume {v.name}")
            if remove:
                v.remove(force=True)
    for n in client.networks.list(filters={"label": CLIPPER_NETWORK_LABEL}):
        n.reload()
        if _ours(n.attrs.get("Labels"), since, n.attrs.get("Created", "")) and not n.attrs.get("Containers"):
            found.append(f"network {n.name}")
            if remove:
                n.remove()
    return found


def _clipper_image_ids(client: Any) -> dict[str, str]:
    """``clipper/<name>:<tag>`` -> image id, for the images `clipper.images` builds."""
    return {tag: image.id for image in client.images.list(name="clipper/*") for tag in image.tags}


def _remove_model_images(client: Any) -> None:
    """The model images Clipper's tests built (``<cluster>-<model>:<version>``); Clipper never removes them."""
    for image in client.images.list():
        for tag in image.tags:
            if CLUSTER_RE.match(tag) and tag.split(":")[0] != tag:
                try:
                    client.images.remove(tag)
                except Exception as e:  # noqa: BLE001 - reported, not fatal
                    print(f"could not remove the image {tag}: {e}", file=sys.stderr)


@pytest.fixture(scope="module")
def clipper_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """Runs the selected Clipper tests once, in Clipper's order, in a child process; cleans up after."""
    import docker

    assert _FOLDER is not None
    selected = {item.callspec.params["case"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")}
    wanted = [[key, name] for key, name, _ in CASES if f"{key}::{name}" in selected]
    work = tmp_path_factory.mktemp("clipper-it") / "integration-tests"
    work.mkdir()
    for name in (TEST_FILE, UTILS_FILE):
        shutil.copy2(_FOLDER / name, work / name)
    (work / "driver.py").write_text(DRIVER)
    results, log = work / "results.json", work / "run.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(STANDIN), str(REPO), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    temp_before = set(os.listdir(CLIPPER_TEMP_DIR)) if os.path.isdir(CLIPPER_TEMP_DIR) else set()
    since = time.time()
    client = docker.from_env(timeout=120)
    images_before = _clipper_image_ids(client)
    started = time.monotonic()
    print(f"\n[clipper-it] running {len(wanted)} of Clipper's tests; log: {log}", flush=True)
    returncode: int | None
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "driver.py", str(results), json.dumps(wanted)], cwd=work, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        try:
            returncode = proc.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            returncode = None
    run = Run(log=log, returncode=returncode, seconds=time.monotonic() - started)
    if results.is_file():
        data = json.loads(results.read_text())
        run.python, run.tests, run.class_errors = data["python"], data["tests"], data["class_errors"]
    run.leftovers = _leftovers(client, since, remove=False)
    images_after = _clipper_image_ids(client)
    run.moved_images = sorted(t for t, i in images_before.items() if images_after.get(t, i) != i)
    counts: dict[str, int] = {}
    for case, record in run.tests.items():
        counts[record["outcome"]] = counts.get(record["outcome"], 0) + 1
        print(f"[clipper-it] {record['outcome']:7} {record['seconds']:6.1f} s  {case}", flush=True)
    print(f"[clipper-it] {len(run.tests)} of Clipper's tests ran in {run.seconds:.0f} s: "
          f"{', '.join(f'{n} {k}' for k, n in sorted(counts.items()))}", flush=True)
    try:
        yield run
    finally:
        _leftovers(client, since, remove=True)
        _remove_model_images(client)
        if os.path.isdir(CLIPPER_TEMP_DIR):
            for name in set(os.listdir(CLIPPER_TEMP_DIR)) - temp_before:
                shutil.rmtree(os.path.join(CLIPPER_TEMP_DIR, name), ignore_errors=True)
        client.close()


@pytest.mark.parametrize("case", [f"{key}::{name}" for key, name, _ in CASES])
def test_clipper(clipper_run: Run, case: str) -> None:
    """One of Clipper's tests, as the child run recorded it."""
    record = clipper_run.tests.get(case)
    if record is None:
        where = "; ".join(e["where"] + ":\n" + e["traceback"] for e in clipper_run.class_errors)
        pytest.fail(f"{case} did not run (exit code {clipper_run.returncode}, {clipper_run.seconds:.0f} s)."
                    f"\n{where}\nEnd of the log {clipper_run.log}:\n{clipper_run.log_tail()}", pytrace=False)
    outcome, detail = record["outcome"], record["detail"]
    expected = EXPECTED.get(case.split("::")[1])
    if expected is not None and outcome in ("failed", "error") and re.search(expected.error, detail):
        pytest.xfail(f"{expected.reason} ({record['seconds']} s)")
    if outcome == "skipped":
        pytest.skip(f"Clipper's test skipped itself: {detail}")
    moved = (f"\nNote: {', '.join(clipper_run.moved_images)} pointed at another image at the end of the run (rebuilt "
             "meanwhile): Clipper's `ancestor` filters then miss containers started from the old one."
             if clipper_run.moved_images else "")
    assert outcome == "passed", \
        f"{case} {outcome} after {record['seconds']} s (log: {clipper_run.log}):\n{detail}{moved}"


def test_clipper_classes_set_up_and_left_nothing(clipper_run: Run) -> None:
    """No ``setUpClass``/``tearDownClass`` error, and every container, volume and network of the run is gone."""
    assert not clipper_run.class_errors, "\n".join(e["where"] + ":\n" + e["traceback"]
                                                   for e in clipper_run.class_errors)
    assert not clipper_run.leftovers, f"left behind by Clipper's tests: {', '.join(clipper_run.leftovers)}"
