"""A test-only "process kubelet": runs the chart's Pods as local processes.

The control plane in controlplane.py has no kubelet and no container runtime, so Pods stay
Pending. `process_kubelet()` fills that gap for one namespace, faithfully enough for the
controllers to see real pods:

- it registers a Node (`process-kubelet`, Ready) and keeps its Lease and Ready condition
  fresh, so the node lifecycle controller never taints it or evicts its pods;
- every 0.5 s it lists the namespace's Pods (optionally by label selector); an unbound
  Pending Pod is bound to the Node (the Binding subresource, as the scheduler does) and its
  single container is started as ONE local process: the image's entrypoint or the
  container's `command` mapped to the console scripts in this venv, plus `args`, with
  `env`/`envFrom` resolved through the API (Secrets, ConfigMaps, fieldRefs);
- it writes Pod status back: Running (Ready from the readinessProbe's httpGet, run against
  the process), then for `restartPolicy: Never` Succeeded/Failed with the exit code, so the
  Job controller and `helm test` see the outcome; other pods are restarted with a back-off;
- a Pod given a deletionTimestamp (scale-in, rollout, uninstall) gets SIGTERM (Celery's
  warm shutdown), SIGKILL after its grace period (capped, see MAX_GRACE_S), then is deleted
  for good (gracePeriodSeconds=0), as a kubelet confirms a graceful deletion;
- closing it stops every process it started.

What cannot work locally is overridden, and each override is listed in `_overrides`: bind
addresses become 127.0.0.1, container ports become free local ports, HOME/TMPDIR a per-pod
temp dir. Service URLs (`http://<service>:<port>`) in the command, args and env are
rewritten to the local port of a ready pod behind that Service (there is no kube-proxy).
Volumes are not mounted: the chart under test keeps artifacts in an fsspec URL.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from controlplane import HOST, ControlPlane, free_port

VENV_BIN = Path(sys.executable).parent
NODE = "process-kubelet"
POLL_S = 0.5
HEARTBEAT_S = 10.0
# A worker's terminationGracePeriodSeconds is its longest job plus a minute (about an hour):
# a test cannot wait that long, and no test job runs longer than this.
MAX_GRACE_S = 60.0
# Env vars that name a bind address / a container port in Conveyor's images.
BIND_ENV = ("CONVEYOR_API_HOST", "CONVEYOR_METRICS_HOST")
PORT_ENV = ("CONVEYOR_API_PORT", "CONVEYOR_METRICS_PORT")

Obj = dict[str, Any]


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_entrypoint(image: str) -> list[str]:
    """The entrypoint of Conveyor's images (services/Dockerfile), as local console scripts."""
    # registry:5000/conveyor/worker-ml:1.2@sha256:... -> worker-ml
    role = image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]
    script = VENV_BIN / f"conveyor-{role}"
    if not script.is_file():
        raise ValueError(f"no local entrypoint for image {image!r} (looked for {script})")
    return [str(script)]


def local_executable(name: str) -> str:
    """`python`, `conveyor-*`: this venv's; anything else: as found on PATH."""
    candidate = VENV_BIN / name
    return str(candidate) if candidate.is_file() else name


@dataclass
class PodProcess:
    """One running (or finished) pod: its process and what the status patches need."""

    pod: Obj
    argv: list[str]
    env: dict[str, str]
    ports: dict[str, int]  # container port (number as text, and name) -> local port
    pod_ip: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    restarts: int = 0
    next_start: float = 0.0  # monotonic time of the next (re)start
    ready: bool | None = None  # last readiness written to the API
    exit_code: int | None = None
    terminal: bool = False  # status written as Succeeded/Failed
    kill_at: float | None = None  # deletion in progress: SIGKILL at this time
    sigkilled: bool = False  # the grace period ran out

    @property
    def name(self) -> str:
        return str(self.pod["metadata"]["name"])

    @property
    def container(self) -> Obj:
        container: Obj = self.pod["spec"]["containers"][0]
        return container

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class ProcessKubelet:
    cp: ControlPlane
    namespace: str
    workdir: Path
    selector: str = ""
    pods: dict[str, PodProcess] = field(default_factory=dict)  # by pod uid
    errors: list[str] = field(default_factory=list)
    _ips: Iterator[int] = field(default_factory=lambda: itertools.count(2))
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    http: httpx.Client = field(init=False)

    # --- public

    def start(self) -> ProcessKubelet:
        self.http = self.cp.client()
        self._register_node()
        self._thread = threading.Thread(target=self._run, name="process-kubelet", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
        with self._lock:
            running = [p for p in self.pods.values() if p.process and p.process.poll() is None]
            for pp in running:
                _signal(pp, signal.SIGTERM)
            for pp in running:
                assert pp.process is not None
                try:
                    pp.process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    _signal(pp, signal.SIGKILL)
                    pp.process.wait(timeout=5)
        self.http.close()

    def snapshot(self) -> list[PodProcess]:
        """Every pod this kubelet ran or runs (a copy: the kubelet's thread adds to it)."""
        with self._lock:
            return list(self.pods.values())

    def by_name(self, name: str) -> PodProcess:
        with self._lock:
            matches = [p for p in self.pods.values() if p.name == name]
        if not matches:
            raise KeyError(name)
        return matches[-1]

    def logs(self, prefix: str = "", tail: int = 3000) -> str:
        with self._lock:
            pods = [p for p in self.pods.values() if p.name.startswith(prefix)]
        return "\n".join(f"--- pod {p.name} {p.argv}\n{p.log()[-tail:]}" for p in pods)

    # --- node

    def _register_node(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
        }
        response = self.http.post("/api/v1/nodes", json=node)
        if response.status_code != 409:
            response.raise_for_status()
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": NODE, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": NODE, "leaseDurationSeconds": 40},
        }
        response = self.http.post(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", json=lease
        )
        if response.status_code != 409:
            response.raise_for_status()
        self._heartbeat()

    def _heartbeat(self) -> None:
        """Renew the Lease and the Ready condition, as a kubelet does (node lifecycle)."""
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self._patch(
            f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE}",
            {"spec": {"renewTime": stamp}},
        )
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "process kubelet is posting ready status",
            "lastHeartbeatTime": now(),
            "lastTransitionTime": now(),
        }
        self._patch(
            f"/api/v1/nodes/{NODE}/status",
            {
                "status": {
                    "conditions": [ready],
                    "addresses": [{"type": "InternalIP", "address": HOST}],
                    "capacity": {"cpu": "64", "memory": "256Gi", "pods": "250"},
                    "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "250"},
                }
            },
        )

    # --- loop

    def _run(self) -> None:
        last_heartbeat = time.monotonic()
        while not self._stop.is_set():
            try:
                if time.monotonic() - last_heartbeat > HEARTBEAT_S:
                    self._heartbeat()
                    last_heartbeat = time.monotonic()
                self._sync()
            except Exception as error:  # keep going: a test reads `errors` when it fails
                self.errors.append(repr(error))
                del self.errors[:-20]
            self._stop.wait(POLL_S)

    def _sync(self) -> None:
        params = {"labelSelector": self.selector} if self.selector else {}
        response = self.http.get(f"/api/v1/namespaces/{self.namespace}/pods", params=params)
        response.raise_for_status()
        listed = {pod["metadata"]["uid"] for pod in response.json()["items"]}
        with self._lock:
            orphans = [pp for uid, pp in self.pods.items() if uid not in listed and not pp.terminal]
        for orphan in orphans:  # the Pod was removed without us (force delete): housekeeping
            if orphan.process is not None and orphan.process.poll() is None:
                _signal(orphan, signal.SIGKILL)
                orphan.sigkilled = True
        for pod in response.json()["items"]:
            uid = pod["metadata"]["uid"]
            with self._lock:
                pp = self.pods.get(uid)
            if pod["metadata"].get("deletionTimestamp"):
                self._delete(pod, pp)
            elif pp is None:
                if not pod["spec"].get("nodeName") and pod["status"].get("phase") == "Pending":
                    admitted = self._admit(pod)
                    if admitted is not None:
                        self._tend(admitted)
            else:
                pp.pod = pod
                self._tend(pp)

    def _admit(self, pod: Obj) -> PodProcess | None:
        """Bind the pod to our Node, then prepare its process (started by `_tend`); None if
        the pod was deleted since it was listed (a ReplicaSet scaled in its newest pod)."""
        name = pod["metadata"]["name"]
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": NODE},
        }
        bound = self.http.post(
            f"/api/v1/namespaces/{self.namespace}/pods/{name}/binding", json=binding
        )
        if bound.status_code == 404:
            return None
        bound.raise_for_status()
        pod_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.workdir))
        container = pod["spec"]["containers"][0]
        ports = {}
        for port in container.get("ports", []):
            local = free_port()
            ports[str(port["containerPort"])] = local
            if "name" in port:
                ports[port["name"]] = local
        env = self._env(container, pod)
        argv = (
            [local_executable(container["command"][0]), *container["command"][1:]]
            if container.get("command")
            else image_entrypoint(container["image"])
        ) + list(container.get("args", []))
        # Service DNS names do not resolve here: point them at a ready local process.
        argv = [self._rewrite_services(word) for word in argv]
        env = {key: self._rewrite_services(value) for key, value in env.items()}
        env.update(_overrides(env, ports, pod_dir))
        pp = PodProcess(
            pod=pod,
            argv=argv,
            env=env,
            ports=ports,
            pod_ip=f"10.244.0.{next(self._ips) % 250 + 2}",  # Endpoints refuse loopback IPs
            log_path=self.workdir / f"{name}.log",
        )
        with self._lock:
            self.pods[pod["metadata"]["uid"]] = pp
        return pp

    def _tend(self, pp: PodProcess) -> None:
        """Start, restart, probe and report one pod's process."""
        if pp.terminal:
            return
        if pp.process is None or pp.process.poll() is not None:
            if pp.process is not None and pp.exit_code is None:
                pp.exit_code = _exit_code(pp.process)
                policy = pp.pod["spec"].get("restartPolicy", "Always")
                if policy == "Never" or (policy == "OnFailure" and pp.exit_code == 0):
                    self._report_terminated(pp)
                    return
                pp.restarts += 1
                pp.next_start = time.monotonic() + min(2.0**pp.restarts, 20.0)  # back-off
                pp.ready = None
            if time.monotonic() < pp.next_start:
                return
            self._start_process(pp)
        ready = self._probe(pp)
        if ready != pp.ready:
            self._report_running(pp, ready)
            pp.ready = ready

    def _start_process(self, pp: PodProcess) -> None:
        cwd = pp.env["HOME"]
        with pp.log_path.open("ab") as log:
            pp.process = subprocess.Popen(
                pp.argv,
                cwd=cwd,
                env=pp.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: pool children die with it
            )
        pp.exit_code = None
        pp.started_at = now()

    def _probe(self, pp: PodProcess) -> bool:
        """The readinessProbe's httpGet against the local port; no probe: ready when running.

        Startup and liveness probes are not run (a test's processes are watched directly).
        """
        probe = pp.container.get("readinessProbe", {}).get("httpGet")
        if probe is None:
            return True
        port = pp.ports.get(str(probe["port"]))
        if port is None:
            return False
        try:
            url = f"http://{HOST}:{port}{probe.get('path', '/')}"
            return 200 <= httpx.get(url, timeout=1).status_code < 400
        except httpx.HTTPError:
            return False

    def _delete(self, pod: Obj, pp: PodProcess | None) -> None:
        """Graceful deletion: SIGTERM, SIGKILL after the grace period, then remove the Pod."""
        if pod["spec"].get("nodeName") != NODE:
            return  # never ours (unbound pods are deleted by the API server at once)
        if pp is not None and pp.process is not None and pp.process.poll() is None:
            if pp.kill_at is None:
                grace = pod["metadata"].get("deletionGracePeriodSeconds") or 0
                pp.kill_at = time.monotonic() + min(float(grace), MAX_GRACE_S)
                _signal(pp, signal.SIGTERM)
                return
            if time.monotonic() < pp.kill_at:
                return
            _signal(pp, signal.SIGKILL)
            pp.sigkilled = True
            pp.process.wait(timeout=10)
        name = pod["metadata"]["name"]
        response = self.http.request(
            "DELETE",
            f"/api/v1/namespaces/{self.namespace}/pods/{name}",
            json={
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": pod["metadata"]["uid"]},
            },
        )
        if response.status_code not in (200, 404, 409):
            response.raise_for_status()

    # --- status

    def _report_running(self, pp: PodProcess, ready: bool) -> None:
        flag = "True" if ready else "False"
        state = {"running": {"startedAt": pp.started_at}}
        self._patch_status(pp, "Running", flag, state)

    def _report_terminated(self, pp: PodProcess) -> None:
        code = pp.exit_code or 0
        state = {
            "terminated": {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": pp.started_at,
                "finishedAt": now(),
            }
        }
        self._patch_status(pp, "Succeeded" if code == 0 else "Failed", "False", state)
        pp.terminal = True

    def _patch_status(self, pp: PodProcess, phase: str, ready: str, state: Obj) -> None:
        conditions = [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": ready},
            {"type": "Ready", "status": ready},
        ]
        for condition in conditions:
            condition["lastTransitionTime"] = now()
        status = {
            "phase": phase,
            "hostIP": HOST,
            "hostIPs": [{"ip": HOST}],
            "podIP": pp.pod_ip,
            "podIPs": [{"ip": pp.pod_ip}],
            "startTime": pp.pod["status"].get("startTime") or pp.started_at,
            "conditions": conditions,
            "containerStatuses": [
                {
                    "name": pp.container["name"],
                    "image": pp.container["image"],
                    "imageID": "",
                    "containerID": f"process://{pp.process.pid if pp.process else 0}",
                    "ready": ready == "True",
                    "started": "running" in state,
                    "restartCount": pp.restarts,
                    "state": state,
                }
            ],
        }
        self._patch(
            f"/api/v1/namespaces/{self.namespace}/pods/{pp.name}/status", {"status": status}
        )

    def _patch(self, path: str, body: Obj) -> None:
        headers = {"Content-Type": "application/merge-patch+json"}
        self.http.patch(path, json=body, headers=headers).raise_for_status()

    # --- env and Services

    def _get(self, kind: str, name: str) -> Obj:
        response = self.http.get(f"/api/v1/namespaces/{self.namespace}/{kind}/{name}")
        response.raise_for_status()
        obj: Obj = response.json()
        return obj

    def _data(self, kind: str, name: str) -> dict[str, str]:
        """A ConfigMap's data or a Secret's decoded data."""
        obj = self._get(kind, name)
        if kind == "secrets":
            return {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
        return dict(obj.get("data", {}))

    def _env(self, container: Obj, pod: Obj) -> dict[str, str]:
        """The container's environment as a kubelet builds it: envFrom, then env in order."""
        # A container starts from its image's env, not ours: keep only what Python needs.
        env = {"PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}
        for key in ("LANG", "LC_ALL"):
            if key in os.environ:
                env[key] = os.environ[key]
        for source in container.get("envFrom", []):
            prefix = source.get("prefix", "")
            for kind, ref in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
                if ref in source:
                    data = self._data(kind, source[ref]["name"])
                    env.update({prefix + k: v for k, v in data.items()})
        for var in container.get("env", []):
            if "value" in var:
                # $(VAR) refers to variables defined before it, as in a real container.
                env[var["name"]] = re.sub(
                    r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                    lambda m: env.get(m.group(1), m.group(0)),
                    var["value"],
                )
                continue
            source = var.get("valueFrom", {})
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                env[var["name"]] = self._data("secrets", ref["name"])[ref["key"]]
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                env[var["name"]] = self._data("configmaps", ref["name"])[ref["key"]]
            elif "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                fields = {
                    "metadata.name": pod["metadata"]["name"],
                    "metadata.namespace": self.namespace,
                    "spec.nodeName": NODE,
                    "status.podIP": HOST,
                    "status.hostIP": HOST,
                }
                env[var["name"]] = fields[path]
        return env

    def _rewrite_services(self, text: str) -> str:
        """`<service>[.<ns>[.svc[.cluster.local]]]:<port>` -> 127.0.0.1:<a ready pod's port>."""
        if ":" not in text:
            return text
        services = self.http.get(f"/api/v1/namespaces/{self.namespace}/services").json()
        for service in services["items"]:
            name = service["metadata"]["name"]
            if name not in text:
                continue
            selector = service["spec"].get("selector") or {}
            for port in service["spec"].get("ports", []):
                local = self._backend_port(selector, str(port.get("targetPort", port["port"])))
                if local is None:
                    continue
                host = (
                    rf"{re.escape(name)}(\.{re.escape(self.namespace)}(\.svc(\.cluster\.local)?)?)?"
                )
                text = re.sub(rf"\b{host}:{port['port']}\b", f"{HOST}:{local}", text)
        return text

    def _backend_port(self, selector: dict[str, str], target: str) -> int | None:
        with self._lock:
            pods = list(self.pods.values())
        for pp in pods:
            labels = pp.pod["metadata"].get("labels", {})
            matches = selector and all(labels.get(k) == v for k, v in selector.items())
            if matches and pp.ready and target in pp.ports:
                return pp.ports[target]
        return None


def _overrides(env: dict[str, str], ports: dict[str, int], pod_dir: Path) -> dict[str, str]:
    """What a pod's env says that cannot hold for a local process, replaced."""
    changed = {
        # emptyDir /tmp (HOME and TMPDIR in the chart): a private dir per pod.
        "HOME": str(pod_dir),
        "TMPDIR": str(pod_dir),
    }
    for key in BIND_ENV:  # "0.0.0.0" (all of the pod's addresses): loopback only here
        if key in env:
            changed[key] = HOST
    for key in PORT_ENV:  # a containerPort: every pod would want the same one
        if env.get(key) in ports:
            changed[key] = str(ports[env[key]])
    return changed


def _signal(pp: PodProcess, sig: signal.Signals) -> None:
    """As a container runtime does: SIGTERM to the container's main process only (Celery's
    pool children must finish their jobs in the warm shutdown), SIGKILL to all of it."""
    if pp.process is not None:
        with contextlib.suppress(ProcessLookupError):
            if sig == signal.SIGKILL:
                os.killpg(pp.process.pid, sig)
            else:
                os.kill(pp.process.pid, sig)


def _exit_code(process: subprocess.Popen[bytes]) -> int:
    code = process.returncode
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as containerd


@contextlib.contextmanager
def process_kubelet(
    cp: ControlPlane, namespace: str, workdir: Path, selector: str = ""
) -> Iterator[ProcessKubelet]:
    """Run the pods of `namespace` (matching `selector`) as local processes until exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    kubelet = ProcessKubelet(cp, namespace, workdir, selector).start()
    try:
        yield kubelet
    finally:
        kubelet.close()
