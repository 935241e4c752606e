"""Security of the hub, beyond tests/chart (which scan the pods with checkov, check the schema,
the Secret-free rendering and that each NetworkPolicy selects its pods):

* the NetworkPolicies *enforce* what they claim: an evaluator of Kubernetes' policy semantics
  (the chart kit's, tests/plugins/chart.py) answers "may pod A reach pod B on port P" for the
  real pods (notebook from KubeSpawner, scheduler and worker from the gateway's controller) and
  the gateway's own pods, under all the policies of the release (the jupyterhub chart's own
  included): nothing reaches a scheduler but traefik, the gateway and the cluster's Prometheus
  (on the metrics port); no notebook or Dask pod reaches the private ranges or the cloud
  metadata server, unless networkPolicy.workloadIdentity opens exactly the identity endpoint;
* the gateway is reachable only with JupyterHub auth: the real authenticator that the chart
  configures refuses requests without a token, with a token the hub does not know, and with a
  valid hub token that was not granted access to the dask-gateway service; the hub's roles grant
  that access to users and to their notebook servers' tokens (tests/test_hub_local.py checks the
  same against a real JupyterHub);
* no credential material anywhere in values, examples or rendered objects, and every credential
  in every generated pod comes by secretKeyRef;
* values that break the chart's promises are refused at ``helm template`` with the key named
  (the cases tests/chart/test_chart_schema.py does not list), insecure security contexts and
  malformed NetworkPolicy peers and ports included.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest
import yaml

RELEASE, NAMESPACE = "hub", "neuro"
GATEWAY = f"{RELEASE}-dask-gateway"
ALL_SETS = ["defaults", "secret-credentials", "iam-role", "custom-endpoint", "profiles",
            "spot-workers", "github-oauth", "https"]


# ---- the release's pods and policies ---------------------------------------------------------

def allowed(policies: list[dict], kit, direction: str, pod: dict, peer, port: int,
            protocol: str = "TCP") -> bool:
    return kit.allowed(policies, direction, pod, peer, port, protocol)


def _pod(labels: dict, namespace: str = NAMESPACE):
    return ("pod", labels, {"kubernetes.io/metadata.name": namespace})


def _labels(kit, release) -> dict[str, dict]:
    """Labels of the release's pods: the generated ones and the gateway's own Deployments."""
    dask = release.dask_pods()
    by_component = {}
    for deployment in release.find("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        if labels.get("gateway.dask.org/instance") == GATEWAY:
            by_component[labels["app.kubernetes.io/component"]] = labels
    (proxy,) = [d["spec"]["template"]["metadata"]["labels"] for d in release.find("Deployment")
                if d["metadata"]["name"] == "proxy"]
    other = dict(dask["worker"]["metadata"]["labels"],
                 **{"gateway.dask.org/instance": "someone-elses-gateway"})
    return {
        "notebook": release.user_pod()["metadata"]["labels"],
        "scheduler": dask["scheduler"]["metadata"]["labels"],
        "worker": dask["worker"]["metadata"]["labels"],
        "traefik": by_component["traefik"], "api": by_component["gateway"],
        "controller": by_component["controller"],
        "proxy": proxy,
        "stranger": {"app": "crypto-miner"},
        "other-gateway-worker": other,
    }


@pytest.fixture
def pods(kit):
    """``pods(value_set)``: the release's pod labels and ALL its NetworkPolicies (ours and the
    jupyterhub chart's), with the real subcharts."""
    def make(value_set: str = "defaults", **release_args) -> dict:
        release = kit.release(value_set, **release_args)
        release.require_subcharts()
        return dict(_labels(kit, release), objects=release.objects,
                    policies=release.find("NetworkPolicy"))

    return make


def test_network_policies_enforce_who_reaches_dask_pods(kit, pods):
    p = pods()
    policies = p["policies"]

    def ingress(dst: str, src: str, port: int) -> bool:
        return allowed(policies, kit, "Ingress", p[dst], _pod(p[src]), port)

    # clients reach a scheduler only through traefik (TLS, per-cluster credentials)
    assert ingress("scheduler", "traefik", 8786) and ingress("scheduler", "traefik", 8787)
    for src in ("notebook", "stranger", "proxy", "controller", "other-gateway-worker"):
        assert not ingress("scheduler", src, 8786), src
        assert not ingress("worker", src, 40000), src
    # the gateway API: scale/adapt on the scheduler's API port, nothing else
    assert ingress("scheduler", "api", 8788) and not ingress("scheduler", "api", 8786)
    assert not ingress("scheduler", "traefik", 8788)
    # a cluster's own pods talk on any port (worker ports are random)
    assert ingress("worker", "scheduler", 40000) and ingress("scheduler", "worker", 8786)
    assert ingress("worker", "worker", 45123)
    # the same labels in another namespace are someone else's pods
    assert not allowed(policies, kit, "Ingress", p["scheduler"], _pod(p["worker"], "elsewhere"),
                       8786)


def test_network_policies_limit_where_dask_pods_and_notebooks_go(kit, pods):
    p = pods()
    policies = p["policies"]

    def egress(src: str, peer, port: int, protocol: str = "TCP") -> bool:
        return allowed(policies, kit, "Egress", p[src], peer, port, protocol)

    for src in ("scheduler", "worker"):
        assert egress(src, ("ip", "52.218.128.1"), 443)  # S3
        assert not egress(src, ("ip", "169.254.169.254"), 80)  # instance metadata: credentials
        assert not egress(src, ("ip", "169.254.169.254"), 443)
        assert not egress(src, ("ip", "52.218.128.1"), 22)
        assert egress(src, ("ip", "10.96.0.10"), 53, "UDP")  # DNS
        assert not egress(src, _pod(p["notebook"]), 8888)
        assert not egress(src, _pod(p["stranger"]), 8080)
        assert egress(src, _pod(p["api"]), 8000)
    assert egress("worker", _pod(p["scheduler"]), 8786)
    # notebooks: to traefik (the gateway's proxy) and S3; the hub's own chart adds the rest
    assert egress("notebook", _pod(p["traefik"]), 8000)
    assert egress("notebook", ("ip", "52.218.128.1"), 443)
    assert not egress("notebook", ("ip", "169.254.169.254"), 80)
    # a custom endpoint in the cluster is reachable from workers, on its port only
    p = pods("custom-endpoint")
    policies = p["policies"]
    minio = _pod({"app": "minio"}, "minio")
    assert allowed(policies, kit, "Egress", p["worker"], minio, 9000)
    assert not allowed(policies, kit, "Egress", p["worker"], minio, 9001)


#: Inside the cluster or the cloud's network: the Kubernetes API (service and endpoint), other
#: namespaces' services, internal load balancers.
PRIVATE = ["10.96.0.1", "10.0.12.7", "172.20.0.5", "192.168.1.10"]
#: Cloud metadata and identity endpoints: AWS/GCP/Azure, ECS task credentials, EKS Pod Identity
#: (IPv4 and IPv6), GKE's metadata server on Calico clusters.
METADATA = [("169.254.169.254", 80), ("169.254.170.2", 80), ("169.254.170.23", 80),
            ("fd00:ec2::23", 80), ("169.254.169.252", 988)]
S3 = ("ip", "52.218.128.1")


@pytest.mark.parametrize("value_set", ALL_SETS)
def test_no_pod_reaches_private_addresses_or_the_metadata_server(kit, pods, value_set):
    """Under all the release's policies (the jupyterhub chart's singleuser policy closes the
    private ranges and the metadata server; ours must not reopen them): notebooks, schedulers
    and workers reach the object store, but nothing private and no cloud credentials. An object
    store inside the cluster needs its own rule (helm/examples/custom-endpoint.yaml)."""
    p = pods(value_set)
    for src in ("notebook", "scheduler", "worker"):
        def egress(peer, port: int, src=src) -> bool:
            return allowed(p["policies"], kit, "Egress", p[src], peer, port)

        assert egress(S3, 443), src
        for ip in PRIVATE:
            for port in (443, 80, 6443, 8080):
                assert not egress(("ip", ip), port), (src, ip, port)
        for ip, port in METADATA:
            assert not egress(("ip", ip), port), (src, ip, port)


IDENTITY_ENDPOINTS = {
    "gke": {("169.254.169.254", 80), ("169.254.169.252", 988)},
    "eks-pod-identity": {("169.254.170.23", 80), ("fd00:ec2::23", 80)},
}


@pytest.mark.parametrize("provider", sorted(IDENTITY_ENDPOINTS))
def test_workload_identity_opens_exactly_its_endpoint(kit, pods, provider):
    """networkPolicy.workloadIdentity: notebooks and Dask pods (which share the ServiceAccount,
    and so the identity) reach the node's identity endpoint on its port; every other metadata
    address and port stays closed, and so do the private ranges."""
    p = pods("iam-role", sets=[f"networkPolicy.workloadIdentity={provider}"])
    opened = IDENTITY_ENDPOINTS[provider]
    for src in ("notebook", "scheduler", "worker"):
        def egress(peer, port: int, src=src) -> bool:
            return allowed(p["policies"], kit, "Egress", p[src], peer, port)

        for ip, port in METADATA:
            assert egress(("ip", ip), port) is ((ip, port) in opened), (src, ip, port)
        for ip, _ in opened:
            assert not egress(("ip", ip), 443) and not egress(("ip", ip), 8080), (src, ip)
        assert not egress(("ip", PRIVATE[0]), 443), src


def test_prometheus_scrapes_scheduler_metrics_only(kit, pods):
    """The cluster's Prometheus, from the namespace the operator names (metrics.prometheus),
    reaches each scheduler's /metrics port and the hub's, nothing else of a Dask cluster; a pod
    labelled like Prometheus in another namespace does not; without metrics, nobody does."""
    p = pods(sets=["metrics.enabled=true"])
    prometheus = _pod({"app.kubernetes.io/name": "prometheus"}, "monitoring")
    impostor = _pod({"app.kubernetes.io/name": "prometheus"}, "someones-namespace")
    hub = [d["spec"]["template"]["metadata"]["labels"] for d in kit.release(
        sets=["metrics.enabled=true"]).find("Deployment") if d["metadata"]["name"] == "hub"][0]

    def ingress(dst, peer, port: int, policies=p["policies"]) -> bool:
        return allowed(policies, kit, "Ingress", p[dst] if isinstance(dst, str) else dst, peer,
                       port)

    assert ingress("scheduler", prometheus, 8787)
    assert ingress(hub, prometheus, 8081)
    assert not ingress("scheduler", prometheus, 8786)
    assert not ingress("scheduler", prometheus, 8788)
    assert not ingress("worker", prometheus, 8787)
    assert not ingress("scheduler", impostor, 8787)
    assert not ingress(hub, impostor, 8081)
    assert not ingress("scheduler", _pod({"app.kubernetes.io/name": "grafana"}, "monitoring"),
                       8787)
    assert not ingress("scheduler", _pod(p["stranger"]), 8787)
    none = pods()
    assert not ingress("scheduler", prometheus, 8787, policies=none["policies"])
    assert not ingress(hub, prometheus, 8081, policies=none["policies"])


# ---- the gateway's authentication -----------------------------------------------------------

@pytest.mark.parametrize("value_set", ALL_SETS)
def test_gateway_uses_jupyterhub_auth(kit, gateway_for, value_set):
    from dask_gateway_server.auth import JupyterHubAuthenticator

    values = kit.values_for(value_set)
    auth = values["dask-gateway"]["gateway"]["auth"]
    assert auth["type"] == "jupyterhub"
    assert not auth["jupyterhub"].get("apiToken")  # from the hub's Secret, never in values
    app, _ = gateway_for(value_set)
    assert type(app.authenticator) is JupyterHubAuthenticator


#: what the stand-in hub API answers for each token (JupyterHub's GET /hub/api/user)
HUB_TOKENS = {
    "alice-token": {"name": "alice", "kind": "user", "groups": ["lab"], "admin": False,
                    "scopes": ["access:services", "self"]},
    # a token the hub issued for something else: it may read one user name, nothing more
    "narrow-token": {"name": "bob", "kind": "user", "groups": [], "admin": False,
                     "scopes": ["read:users:name!user=bob"]},
}


def _gateway_auth(app, tokens: dict[str, str | None]) -> dict:
    """Run the gateway's real authenticator against a stand-in hub API on localhost."""
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    authenticator = app.authenticator

    async def user(request):
        token = request.headers.get("Authorization", "").removeprefix("token ")
        if token in HUB_TOKENS:
            return web.json_response(HUB_TOKENS[token])
        return web.json_response({"status": 403, "message": "Missing or invalid credentials."},
                                 status=403)

    async def scenario():
        hub = web.Application()
        hub.router.add_get("/hub/api/user", user)
        runner = web.AppRunner(hub)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        authenticator.jupyterhub_api_url = f"http://127.0.0.1:{port}/hub/api"
        await authenticator.setup(app)
        outcomes = {}
        try:
            for name, header in tokens.items():
                headers = {"Authorization": header} if header else {}
                request = make_mocked_request("GET", "/api/v1/clusters/", headers=headers)
                try:
                    outcomes[name] = await authenticator.authenticate(request)
                except web.HTTPException as exc:
                    outcomes[name] = exc.status
        finally:
            await authenticator.cleanup()
            await runner.cleanup()
        return outcomes

    return asyncio.run(scenario())


def test_gateway_refuses_requests_without_a_valid_hub_token(gateway_for):
    """The chart's gateway: no token -> 401, a token the hub does not know -> refused, the
    user's hub token -> that user."""
    app, _ = gateway_for("defaults")
    outcomes = _gateway_auth(app, {"none": None, "basic": "Basic YWxpY2U6eA==",
                                   "unknown": "jupyterhub stolen-or-made-up",
                                   "valid": "jupyterhub alice-token"})
    assert outcomes["none"] == 401 and outcomes["basic"] == 401
    assert isinstance(outcomes["unknown"], int) and outcomes["unknown"] >= 400
    assert outcomes["valid"].name == "alice" and set(outcomes["valid"].groups) == {"lab"}


@pytest.mark.parametrize("value_set", ["defaults", "secret-credentials"])
def test_gateway_refuses_hub_tokens_without_access_to_it(gateway_for, value_set):
    """A valid hub token is not enough: it must carry access to the dask-gateway service (a
    token issued for something else, however narrow, would otherwise create clusters)."""
    app, _ = gateway_for(value_set)
    assert app.authenticator.jupyterhub_service_name == "dask-gateway"
    assert app.authenticator.use_service_access_scopes is True
    outcomes = _gateway_auth(app, {"narrow": "jupyterhub narrow-token",
                                   "valid": "jupyterhub alice-token"})
    assert outcomes["narrow"] == 401
    assert outcomes["valid"].name == "alice"


def test_gateway_keeps_an_operators_own_service_name(kit, gateway_for):
    values = kit.values_for("defaults")
    values["dask-gateway"]["gateway"]["extraConfig"]["00-operator"] = (
        'c.JupyterHubAuthenticator.jupyterhub_service_name = "dask"\n')
    app, _ = gateway_for("defaults", values=values)
    assert app.authenticator.jupyterhub_service_name == "dask"


@pytest.mark.parametrize("value_set", ALL_SETS)
def test_hub_roles_give_users_and_notebook_tokens_access_to_the_gateway(kit, hub_for,
                                                                         value_set):
    """What the gateway demands, the hub grants: every user's tokens, and the token of each
    notebook server (JUPYTERHUB_API_TOKEN, what dask-gateway's client sends), get
    access:services!service=dask-gateway, and nothing of JupyterHub's defaults is taken away."""
    from jupyterhub.roles import get_default_roles
    from jupyterhub.scopes import _check_scopes_exist

    c, _, _ = hub_for(value_set)
    roles = {role["name"]: role for role in c.JupyterHub.load_roles}
    defaults = {role["name"]: role for role in get_default_roles()}
    for name in ("user", "server"):
        scopes = roles[name]["scopes"]
        _check_scopes_exist(scopes, who_for=f"role {name}")  # JupyterHub refuses typos
        assert "access:services!service=dask-gateway" in scopes, name
        assert set(defaults[name]["scopes"]) <= set(scopes), name
        assert not {"admin:users", "admin:servers", "access:services", "inherit"} & set(scopes)
    assert set(kit.values_for(value_set)["jupyterhub"]["hub"]["loadRoles"]) == {"user", "server"}
    # what the jupyterhub chart adds itself: its idle culler's role, for that service alone
    for name in set(roles) - {"user", "server"}:
        assert roles[name].get("services") == [name] and not roles[name].get("users") \
            and not roles[name].get("groups"), name
        assert "access:services!service=dask-gateway" not in roles[name]["scopes"], name


# ---- credentials ----------------------------------------------------------------------------

#: things that look like key material (AWS key ids, secrets, private keys, tokens)
SECRET_PATTERNS = [
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"(?i)(secret_?access_?key|aws_secret|password|api_?token)\"?\s*[:=]\s*\"?"
               r"[A-Za-z0-9/+=]{16,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
]


def test_no_credential_material_in_values_examples_or_rendered_objects(kit, render):
    texts = {"values.yaml": (kit.CHART / "values.yaml").read_text()}
    texts.update({f.name: f.read_text() for f in sorted(kit.EXAMPLES.glob("*.yaml"))})
    for value_set in ALL_SETS:
        texts[f"rendered {value_set}"] = yaml.safe_dump_all(render(value_set))
    for name, text in texts.items():
        for pattern in SECRET_PATTERNS:
            found = [m.group(0) for m in pattern.finditer(text)
                     if "AKIA..." not in m.group(0)]  # the example's placeholder in a comment
            assert found == [], (name, found)


#: tokens the hub and the gateway generate per pod at run time (not from values)
RUNTIME_TOKENS = {"JPY_API_TOKEN", "JUPYTERHUB_API_TOKEN", "DASK_GATEWAY_API_TOKEN"}


@pytest.mark.parametrize("value_set", ALL_SETS)
def test_every_credential_in_every_pod_is_a_secret_reference(kit, value_set):
    for role, pod in kit.generated_pods(value_set).items():
        for container in pod["spec"]["containers"]:
            for env in container.get("env", []):
                name = env["name"]
                if name.startswith("AWS_") and name not in ("AWS_DEFAULT_REGION", "AWS_REGION",
                                                            "AWS_ROLE_ARN",
                                                            "AWS_WEB_IDENTITY_TOKEN_FILE",
                                                            "AWS_ENDPOINT_URL_S3"):
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], \
                        (value_set, role, name)
                elif re.search(r"SECRET|PASSWORD|TOKEN", name) and name not in RUNTIME_TOKENS:
                    assert "value" not in env, (value_set, role, name)
        assert pod["spec"].get("automountServiceAccountToken") is False, (value_set, role)
    settings = kit.release(value_set).settings
    assert not re.search(r"(?i)AKIA|secretaccesskey\"\s*:\s*\"[^A-Z_]", json.dumps(settings))


# ---- values ---------------------------------------------------------------------------------

@pytest.mark.parametrize("setting,message", [
    ("dask.limits.maxWorkersPerCluster=0", "at '/dask/limits/maxWorkersPerCluster': minimum"),
    ("dask.limits.maxClustersPerUser=-1", "at '/dask/limits/maxClustersPerUser': minimum"),
    ("dask.scheduler.cores=0", "at '/dask/scheduler/cores': exclusiveMinimum"),
    ("json:dask.worker.cores.min=0", "at '/dask/worker/cores/min': exclusiveMinimum"),
    ("dask.idleTimeout=abc", "at '/dask/idleTimeout': got string, want number"),
    ("json:networkPolicy.s3Egress.ports=[]", "at '/networkPolicy/s3Egress/ports': minItems"),
    ("json:networkPolicy.s3Egress.to=[]", "at '/networkPolicy/s3Egress/to': minItems"),
    ("s3.region=", "at '/s3/region': minLength"),
    ("image.name=repo/notebook:1.0", "at '/image/name'"),
    ("credentials.keys.accessKeyId=", "at '/credentials/keys/accessKeyId': minLength"),
    ("json:credentials.keys={\"accessKeyId\":\"a\",\"secretAccessKey\":\"b\","
     "\"sessionToken\":\"\",\"secretValue\":\"AKIAIOSFODNN7EXAMPLE\"}",
     "additional properties 'secretValue' not allowed"),
])
def test_more_invalid_values_are_refused_with_the_key_named(helm, setting, message):
    stderr = helm.template_error(sets=[setting])
    assert "values don't meet the specifications of the schema" in stderr
    assert message in stderr, stderr


@pytest.mark.parametrize("setting,message", [
    ("securityContext.pod.runAsUser=0",
     "at '/securityContext/pod/runAsUser': minimum: got 0, want 1"),
    ("securityContext.container.runAsUser=0",
     "at '/securityContext/container/runAsUser': minimum: got 0, want 1"),
    ("securityContext.pod.runAsNonRoot=false",
     "at '/securityContext/pod/runAsNonRoot': value must be true"),
    ("securityContext.pod.runAsNonRoot=null", "at '/securityContext/pod': missing property "
                                              "'runAsNonRoot'"),
    ("securityContext.container.privileged=true",
     "at '/securityContext/container/privileged': value must be false"),
    ("securityContext.container.allowPrivilegeEscalation=true",
     "at '/securityContext/container/allowPrivilegeEscalation': value must be false"),
    ("securityContext.container.capabilities.add[0]=SYS_ADMIN",
     "at '/securityContext/container/capabilities/add': maxItems: got 1, want 0"),
    ("securityContext.container.capabilities.drop[0]=NET_RAW",
     "at '/securityContext/container/capabilities/drop'"),
    ("securityContext.container.capabilities=null",
     "at '/securityContext/container': missing property 'capabilities'"),
    ("securityContext.pod.seccompProfile.type=Unconfined",
     "at '/securityContext/pod/seccompProfile/type': value must be one of"),
    ("securityContext.container.procMount=Unmasked",
     "at '/securityContext/container/procMount'"),
    ("networkPolicy.s3Egress.to[0].ipBlock.cidr=not-a-cidr",
     "at '/networkPolicy/s3Egress/to/0/ipBlock/cidr': 'not-a-cidr' does not match pattern"),
    ("networkPolicy.s3Egress.to[0].ipBlock.cidr=10.0.0.0/33",
     "at '/networkPolicy/s3Egress/to/0/ipBlock/cidr'"),
    ("networkPolicy.s3Egress.to[0].ipBlock.except[0]=169.254.169.254",
     "at '/networkPolicy/s3Egress/to/0/ipBlock/except/0'"),
    ("json:networkPolicy.s3Egress.ports[0].port=70000",
     "at '/networkPolicy/s3Egress/ports/0/port': maximum: got 70,000, want 65,535"),
    ("json:networkPolicy.s3Egress.ports[0].port=0",
     "at '/networkPolicy/s3Egress/ports/0/port': minimum: got 0, want 1"),
    ("json:networkPolicy.s3Egress.ports[0].port=\"443\"",
     "at '/networkPolicy/s3Egress/ports/0/port': '443' does not match pattern"),
    ("json:networkPolicy.extraEgress=[{\"ports\":[{\"port\":9000,\"endPort\":65536}]}]",
     "at '/networkPolicy/extraEgress/0/ports/0/endPort': maximum"),
])
def test_insecure_or_malformed_values_are_refused(helm, setting, message):
    """Values that would run a container as root or privileged, give it capabilities, or write a
    NetworkPolicy the API server rejects fail at ``helm template``, naming the key."""
    stderr = helm.template_error(sets=[setting])
    assert "values don't meet the specifications of the schema" in stderr
    assert message in stderr, stderr


def test_secure_variations_still_render(helm, kit):
    """The schema refuses what is insecure, not what is merely different."""
    objects = helm.template(sets=[
        "securityContext.pod.runAsUser=1001", "securityContext.container.runAsNonRoot=true",
        "securityContext.container.readOnlyRootFilesystem=true",
        "securityContext.pod.seccompProfile.type=Localhost",
        "securityContext.pod.seccompProfile.localhostProfile=profiles/dask.json",
        "json:networkPolicy.s3Egress.to=[{\"ipBlock\":{\"cidr\":\"52.218.0.0/17\"}},"
        "{\"ipBlock\":{\"cidr\":\"2600:1f00::/24\",\"except\":[\"fd00:ec2::254/128\"]}}]",
        "json:networkPolicy.s3Egress.ports=[{\"port\":\"https\"},{\"port\":8000,"
        "\"endPort\":8100}]",
    ])
    settings = json.loads(kit.settings_json(objects))
    assert settings["securityContext"]["pod"]["runAsUser"] == 1001


def test_hub_roles_without_gateway_access_for_notebooks_are_refused(helm):
    """A -f file replaces the `server` role's scopes: if they lose the gateway, no notebook could
    use Dask (its token would be refused), so helm refuses the values, saying why."""
    stderr = helm.template_error(sets=["jupyterhub.hub.loadRoles.server.scopes={users:activity!"
                                       "user,access:servers!server}"])
    assert "jupyterhub.hub.loadRoles.server.scopes must include " \
           "access:services!service=dask-gateway" in stderr
