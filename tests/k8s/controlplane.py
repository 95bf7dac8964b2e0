"""A real, test-only Kubernetes control plane with KEDA, all on 127.0.0.1.

etcd, kube-apiserver and kube-controller-manager, plus the KEDA operator and
metrics adapter run as plain processes out of cluster (as KEDA's `make run`
does). There is no kubelet: Pods stay Pending, but Deployments, ReplicaSets,
HPAs, ScaledObjects and the external metrics API are all real.

Binaries come from tests/k8s/build.sh (a per-version cache outside the repo).

    from controlplane import control_plane  # tests under tests/k8s (rootdir sys.path)
    with control_plane() as cp:          # starts everything, waits until ready
        cp.kubectl("get", "--raw", "/version")
    # every process is stopped and the temp dir removed here

    python tests/k8s/controlplane.py up      # run until Ctrl-C, print KUBECONFIG
    python tests/k8s/controlplane.py smoke   # start, prove KEDA -> HPA, stop
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import conveyor_harness
import httpx
import yaml
from conveyor_harness import Proc, check_alive, free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
HOST = "127.0.0.1"
SERVICE_CIDR = "10.0.0.0/24"
KEDA_NS = "keda"
# The aggregator dials the APIService's Service; an ExternalName Service is
# resolved by name (no kube-proxy needed), so this one points at loopback.
ADAPTER_SERVICE = "keda-metrics-apiserver"
PORTS = ("etcd", "etcd-peer", "apiserver", "keda-grpc", "keda-metrics", "keda-probe", "adapter")


def cache_dir() -> Path:
    """The binaries' cache dir: $CONVEYOR_K8S_DIR, else build.sh (idempotent) says."""
    if env := os.environ.get("CONVEYOR_K8S_DIR"):
        return Path(env)
    out = subprocess.run(
        ["bash", str(HERE / "build.sh")], capture_output=True, text=True, check=True
    ).stdout
    return Path(out.strip().splitlines()[-1])


def kubectl_path() -> str:
    for candidate in (os.environ.get("KUBECTL"), str(REPO / ".tools/bin/kubectl")):
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("kubectl")
    if not found:
        raise RuntimeError("kubectl not found: run `make tools` or set KUBECTL")
    return found


# --- certificates (openssl CLI: the stdlib cannot make X.509) -------------------------


def _openssl(cmd: str, **paths: Path) -> None:
    """Run `openssl <cmd>`; {name} words are filled after splitting (paths may hold spaces)."""
    argv = [word.format_map({k: str(v) for k, v in paths.items()}) for word in cmd.split()]
    subprocess.run(["openssl", *argv], check=True, capture_output=True)


EC_KEY = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"


def _make_ca(pki: Path) -> None:
    cmd = f"req -x509 {EC_KEY} -days 7 -subj /CN=conveyor-test-ca -keyout {{key}} -out {{crt}}"
    _openssl(cmd, key=pki / "ca.key", crt=pki / "ca.crt")


def _make_cert(pki: Path, name: str, cn: str, sans: str = "") -> None:
    """A leaf cert signed by the CA; both EKUs so one pair can serve and dial (KEDA mTLS)."""
    ext = pki / f"{name}.ext"
    lines = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "extendedKeyUsage=serverAuth,clientAuth",
    ]
    ext.write_text("\n".join(lines + ([f"subjectAltName={sans}"] if sans else [])) + "\n")
    key, csr, crt = (pki / f"{name}.{suffix}" for suffix in ("key", "csr", "crt"))
    _openssl(f"req -new {EC_KEY} -subj /CN={cn} -keyout {{key}} -out {{csr}}", key=key, csr=csr)
    sign = "x509 -req -CA {ca} -CAkey {ca_key} -CAcreateserial -days 7 -extfile {ext}"
    _openssl(
        sign + " -in {csr} -out {crt}",
        ca=pki / "ca.crt",
        ca_key=pki / "ca.key",
        ext=ext,
        csr=csr,
        crt=crt,
    )


def make_pki(pki: Path) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    _make_ca(pki)
    _make_cert(
        pki,
        "apiserver",
        "kube-apiserver",
        sans="IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local",
    )
    # The aggregator's client cert when it proxies to the adapter (requestheader auth).
    _make_cert(pki, "front-proxy-client", "front-proxy-client")
    # KEDA: the adapter serves the APIService (ServerName <svc>.<ns>.svc) with it, and
    # operator <-> adapter gRPC is mTLS with the same CA, dialled on 127.0.0.1.
    _make_cert(
        pki,
        "keda",
        "keda",
        sans=f"DNS:{ADAPTER_SERVICE}.{KEDA_NS}.svc,DNS:keda-operator.{KEDA_NS}.svc,"
        "DNS:localhost,IP:127.0.0.1",
    )
    _openssl("genrsa -out {key} 2048", key=pki / "sa.key")
    _openssl("rsa -in {key} -pubout -out {pub}", key=pki / "sa.key", pub=pki / "sa.pub")
    # KEDA reads ca.crt/tls.crt/tls.key from one dir (its secret's layout).
    keda = pki / "keda-certs"
    keda.mkdir()
    for src, dst in (("ca.crt", "ca.crt"), ("keda.crt", "tls.crt"), ("keda.key", "tls.key")):
        shutil.copy(pki / src, keda / dst)


@dataclass
class ControlPlane:
    """Handles of a running control plane; build with `control_plane()`."""

    workdir: Path
    bin_dir: Path
    crd_dir: Path
    keda: bool = True
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    ports: dict[str, int] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://{HOST}:{self.ports['apiserver']}"

    def env(self) -> dict[str, str]:
        """Environment for kubectl/helm/clients: KUBECONFIG points at this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def client(self) -> httpx.Client:
        """An httpx client for the API server, authenticated as cluster admin."""
        return httpx.Client(
            base_url=self.server,
            verify=ssl.create_default_context(cafile=self.pki / "ca.crt"),
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [kubectl_path(), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
        )

    def apply(self, *objects: dict[str, Any]) -> None:
        docs = yaml.safe_dump_all(objects)
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=docs)

    # --- lifecycle

    def start(self, attempts: int = 2) -> ControlPlane:
        """Start everything; a failed start is stopped and tried once more on fresh ports
        (free_port() lets go of its port before a server binds it: another process on the
        machine may take it in between)."""
        for attempt in range(1, attempts + 1):
            try:
                self._start()
                return self
            except Exception:
                self.stop()
                if attempt == attempts:
                    raise
        return self

    def _start(self) -> None:
        for name in PORTS:
            self.ports[name] = free_port()
        make_pki(self.pki)
        (self.workdir / "tokens.csv").write_text(f"{self.token},admin,admin,system:masters\n")
        self._write_kubeconfig()
        self._start_etcd()
        self._start_apiserver()
        self._start_controller_manager()
        if self.keda:
            self._start_keda()

    def stop(self) -> None:
        """SIGTERM every process group (newest first), then SIGKILL what lingers."""
        conveyor_harness.stop_all(reversed(self.procs), timeout=15)
        self.procs.clear()

    def _spawn(self, name: str, argv: list[str], **env: str) -> Proc:
        # Own process group: stop() kills it whole.
        proc = conveyor_harness.start(name, argv, {**os.environ, **env}, self.workdir, self.workdir)
        self.procs.append(proc)
        return proc

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 90) -> None:
        """Poll `check` until true; fail early (with logs) if a process died."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.HTTPError, subprocess.CalledProcessError, OSError):
                if check():
                    return
            check_alive(self.procs, what)
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {p.name}\n{p.log()[-2000:]}" for p in self.procs)
                raise RuntimeError(f"timed out after {timeout}s waiting for {what}\n{logs}")
            time.sleep(0.5)

    def _write_kubeconfig(self) -> None:
        ca = base64.b64encode((self.pki / "ca.crt").read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {"server": self.server, "certificate-authority-data": ca},
                }
            ],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
            "current-context": "test",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    def _start_etcd(self) -> None:
        client = f"http://{HOST}:{self.ports['etcd']}"
        peer = f"http://{HOST}:{self.ports['etcd-peer']}"
        self._spawn(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                "--unsafe-no-fsync",  # throwaway data: skip fsync, much faster on a busy disk
                "--log-level=warn",
            ],
        )
        self.wait_for(
            "etcd", lambda: httpx.get(f"{client}/health", timeout=2).json()["health"] == "true"
        )

    def _start_apiserver(self) -> None:
        pki = self.pki
        self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://{HOST}:{self.ports['etcd']}",
                f"--bind-address={HOST}",
                f"--advertise-address={HOST}",
                f"--secure-port={self.ports['apiserver']}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--token-auth-file={self.workdir / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                # On by default since 1.25; named so a `restricted` namespace label is enforced.
                "--enable-admission-plugins=PodSecurity",
                "--allow-privileged=true",  # as kubeadm: privileged is PodSecurity's call
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                # Aggregation layer (for KEDA's external metrics APIService).
                f"--requestheader-client-ca-file={pki / 'ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
                # The `kubernetes` Service's Endpoints may not hold a loopback IP; nothing here
                # routes Service IPs anyway (no kube-proxy).
                "--endpoint-reconciler-type=none",
                "--profiling=false",
            ],
        )

        def ready() -> bool:
            with self.client() as http:
                return http.get("/readyz").status_code == 200

        self.wait_for("kube-apiserver /readyz", ready, timeout=120)

    def _start_controller_manager(self) -> None:
        pki = self.pki
        self._spawn(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                "--secure-port=0",  # no /healthz listener needed (and none on 0.0.0.0)
                "--controllers=*",
                "--horizontal-pod-autoscaler-sync-period=5s",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--leader-elect=false",
                "--cluster-name=conveyor-test",
            ],
        )

        def default_sa() -> bool:  # the serviceaccount controller is up and working
            with self.client() as http:
                return http.get("/api/v1/namespaces/default/serviceaccounts/default").is_success

        self.wait_for("kube-controller-manager (default ServiceAccount)", default_sa)

    def _start_keda(self) -> None:
        certs = self.pki / "keda-certs"
        custom_ca = self.workdir / "keda-custom-ca"  # --ca-dir: nothing extra to trust
        custom_ca.mkdir()
        self.kubectl("apply", "--server-side", "-f", str(self.crd_dir))
        # The operator's watches fail (and retry noisily) until its CRDs are served.
        self.kubectl(
            "wait", "--for=condition=Established", "crd", "--all", "--timeout=180s"
        )  # slow on a loaded 2-core machine
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KEDA_NS}})
        keda_env = {
            "KUBECONFIG": str(self.kubeconfig),
            "WATCH_NAMESPACE": "",  # all namespaces, as KEDA's `make run`
            "KEDA_CLUSTER_OBJECT_NAMESPACE": KEDA_NS,
            "POD_NAMESPACE": KEDA_NS,
        }
        self._spawn(
            "keda-operator",
            [
                str(self.bin_dir / "keda"),
                "--leader-elect=false",
                f"--metrics-bind-address={HOST}:{self.ports['keda-metrics']}",
                f"--health-probe-bind-address={HOST}:{self.ports['keda-probe']}",
                f"--metrics-service-bind-address={HOST}:{self.ports['keda-grpc']}",
                # Certs are ours (see make_pki): rotation would write a Secret and patch the
                # APIService/webhooks for in-cluster Service names.
                "--enable-cert-rotation=false",
                "--enable-webhook-patching=false",
                f"--cert-dir={certs}",
                f"--ca-dir={custom_ca}",
                "--zap-log-level=info",
            ],
            **keda_env,
        )
        probe = f"http://{HOST}:{self.ports['keda-probe']}/readyz"
        self.wait_for("keda-operator /readyz", lambda: httpx.get(probe, timeout=2).is_success)
        self._spawn(
            "keda-adapter",
            [
                str(self.bin_dir / "keda-adapter"),
                f"--bind-address={HOST}",
                f"--secure-port={self.ports['adapter']}",
                f"--cert-dir={certs}",
                f"--tls-cert-file={certs / 'tls.crt'}",
                f"--tls-private-key-file={certs / 'tls.key'}",
                f"--lister-kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                f"--metrics-service-address={HOST}:{self.ports['keda-grpc']}",
                "--zap-log-level=info",
            ],
            **keda_env,
        )
        self._register_adapter()

    def _register_adapter(self) -> None:
        """Point v1beta1.external.metrics.k8s.io at the adapter on 127.0.0.1."""
        ca = base64.b64encode((self.pki / "ca.crt").read_bytes()).decode()
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": ADAPTER_SERVICE, "namespace": KEDA_NS},
                "spec": {"type": "ExternalName", "externalName": HOST},
            },
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": "v1beta1.external.metrics.k8s.io"},
                "spec": {
                    "group": "external.metrics.k8s.io",
                    "version": "v1beta1",
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                    # ExternalName: the aggregator dials <externalName>:<port> with TLS
                    # ServerName keda-metrics-apiserver.keda.svc, checked against caBundle.
                    "service": {
                        "name": ADAPTER_SERVICE,
                        "namespace": KEDA_NS,
                        "port": self.ports["adapter"],
                    },
                    "caBundle": ca,
                },
            },
        )

        def available() -> bool:
            with self.client() as http:
                got = http.get(
                    "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.external.metrics.k8s.io"
                ).json()
            conditions = got.get("status", {}).get("conditions", [])
            return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)

        self.wait_for("APIService v1beta1.external.metrics.k8s.io Available", available)


@contextlib.contextmanager
def control_plane(workdir: Path | None = None, keda: bool = True) -> Iterator[ControlPlane]:
    """Start the control plane (and KEDA); stop every process on exit.

    `workdir` (certs, kubeconfig, logs, etcd data) is kept when given, else a temp dir
    that is removed afterwards.
    """
    cache = cache_dir()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="conveyor-k8s-")))
        workdir.mkdir(parents=True, exist_ok=True)
        cp = ControlPlane(workdir, cache / "bin", cache / "crds", keda=keda)
        stack.callback(cp.stop)
        yield cp.start()


# --- proof: KEDA turns a RabbitMQ queue into an HPA and an external metric ------------


def _rabbit(method: str, path: str, body: Any = None) -> httpx.Response:
    url = f"http://{HOST}:15672/api/{path}"
    response = httpx.request(method, url, auth=("guest", "guest"), json=body, timeout=30)
    response.raise_for_status()
    return response


@contextlib.contextmanager
def rabbitmq_queue(messages: int) -> Iterator[tuple[str, str]]:
    """A throwaway vhost with one durable queue holding `messages`; yields (vhost, queue)."""
    vhost, queue = f"k8s-smoke-{uuid.uuid4().hex[:8]}", "jobs"
    v = urllib.parse.quote(vhost, safe="")
    _rabbit("PUT", f"vhosts/{v}")
    try:
        _rabbit("PUT", f"permissions/{v}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
        _rabbit("PUT", f"queues/{v}/{queue}", {"durable": True})
        for i in range(messages):
            _rabbit(
                "POST",
                f"exchanges/{v}/amq.default/publish",
                {
                    "properties": {},
                    "routing_key": queue,
                    "payload": str(i),
                    "payload_encoding": "string",
                },
            )
        yield vhost, queue
    finally:
        _rabbit("DELETE", f"vhosts/{v}")


RESTRICTED_NS = """
apiVersion: v1
kind: Namespace
metadata:
  name: restricted
  labels: {pod-security.kubernetes.io/enforce: restricted}
"""
PRIVILEGED_POD = """
apiVersion: v1
kind: Pod
metadata: {name: bad, namespace: restricted}
spec:
  containers: [{name: c, image: busybox, securityContext: {privileged: true}}]
"""


def smoke(cp: ControlPlane) -> None:
    """Checks the phase-1 promises, printing each; raises on the first failure."""
    version = json.loads(cp.kubectl("get", "--raw", "/version").stdout)
    print("version:", version["gitVersion"], version["buildDate"])

    # The API server allows privileged pods; PodSecurity refuses them when restricted.
    cp.kubectl("apply", "-f", "-", input=RESTRICTED_NS)
    cp.wait_for(
        "default ServiceAccount in restricted",
        lambda: cp.kubectl("get", "sa", "default", "-n", "restricted").returncode == 0,
    )
    refused = cp.kubectl("create", "--dry-run=server", "-f", "-", input=PRIVILEGED_POD, check=False)
    assert "violates PodSecurity" in refused.stderr, refused
    print("PodSecurity: privileged pod refused in restricted namespace")

    discovery = cp.kubectl("get", "--raw", "/apis/external.metrics.k8s.io/v1beta1").stdout
    print("external metrics API:", discovery[:100], "...")

    with rabbitmq_queue(messages=7) as (vhost, queue):
        amqp = f"amqp://guest:guest@{HOST}:5672/{urllib.parse.quote(vhost, safe='')}"
        manifests = Template((HERE / "smoke.yaml").read_text()).substitute(amqp=amqp, queue=queue)
        cp.kubectl("apply", "-f", "-", input=manifests)
        cp.wait_for(
            "HPA keda-hpa-worker (made by KEDA)",
            lambda: cp.kubectl("get", "hpa", "keda-hpa-worker", "-n", "smoke").returncode == 0,
        )
        print("HPA:", cp.kubectl("get", "hpa", "-n", "smoke", "--no-headers").stdout.strip())
        selector = urllib.parse.quote("scaledobject.keda.sh/name=worker", safe="")
        path = (
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/smoke/"
            f"s0-rabbitmq-{queue}?labelSelector={selector}"
        )

        def metric_is_7() -> bool:
            items = json.loads(cp.kubectl("get", "--raw", path).stdout)["items"]
            return bool(items) and items[0]["value"] == "7"

        cp.wait_for(f"external metric s0-rabbitmq-{queue} == 7", metric_is_7)
        print("external metric:", cp.kubectl("get", "--raw", path).stdout.strip())

        def scaled_to_2() -> bool:  # ceil(7 messages / 5 per replica)
            replicas = "jsonpath={.spec.replicas}"
            out = cp.kubectl("get", "deploy", "worker", "-n", "smoke", "-o", replicas).stdout
            return out.strip() == "2"

        cp.wait_for("the HPA to scale Deployment/worker to 2", scaled_to_2, timeout=120)
        print("HPA scaled Deployment/worker to 2 replicas")


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "smoke"
    # SIGTERM unwinds like Ctrl-C, so the context manager stops every process.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if command == "up":
        with control_plane(Path(argv[2]) if len(argv) > 2 else None) as cp:
            print(f"export KUBECONFIG={cp.kubeconfig}   # Ctrl-C stops everything", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
        return 0
    if command == "smoke":
        t0 = time.monotonic()
        with control_plane(Path(argv[2]) if len(argv) > 2 else None) as cp:
            print(f"control plane ready in {time.monotonic() - t0:.1f}s")
            smoke(cp)
        print(f"smoke passed; all stopped ({time.monotonic() - t0:.1f}s)")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
