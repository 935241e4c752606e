{{/*
Names, labels and the settings document shared by the hub and the gateway.

Why a settings document: Helm cannot template the values of subcharts, so the Python snippets in
`jupyterhub.hub.extraConfig` and `dask-gateway.gateway.extraConfig` (values.yaml) cannot see our
top-level values directly. This chart renders them once, as JSON, into the ConfigMap named by
"neuropixels-hub.settingsName"; the hub and gateway pods receive it as the environment variable
NEUROPIXELS_HUB_SETTINGS and the snippets read it. Outside Kubernetes (tests, `hub local`) the same
JSON is passed the same way.
*/}}

{{- define "neuropixels-hub.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "neuropixels-hub.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "neuropixels-hub.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Standard labels (https://helm.sh/docs/chart_best_practices/labels/). */}}
{{- define "neuropixels-hub.labels" -}}
helm.sh/chart: {{ include "neuropixels-hub.chart" . }}
{{ include "neuropixels-hub.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: neuropixels-hub
{{- end -}}

{{- define "neuropixels-hub.selectorLabels" -}}
app.kubernetes.io/name: {{ include "neuropixels-hub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
The settings ConfigMap has a fixed name because the subcharts' values (static YAML) refer to it
by name in `jupyterhub.hub.extraEnv` and `dask-gateway.gateway.env`. The jupyterhub chart itself
uses fixed names (hub, proxy-public), so there is one hub per namespace anyway.
*/}}
{{- define "neuropixels-hub.settingsName" -}}
neuropixels-hub-settings
{{- end -}}

{{/* Jupyter server and JupyterLab configuration files of notebooks (templates/jupyter-config.yaml). */}}
{{- define "neuropixels-hub.jupyterConfigName" -}}
neuropixels-hub-jupyter
{{- end -}}

{{- define "neuropixels-hub.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (printf "%s-user" (include "neuropixels-hub.fullname" .)) .Values.serviceAccount.name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "neuropixels-hub.image" -}}
{{- printf "%s:%s" .Values.image.name .Values.image.tag -}}
{{- end -}}

{{/*
The images a Dask cluster may run (JSON list): ours first, then every image that a
jupyterhub.singleuser profile sets literally (profileList[].kubespawner_override.image and its
profile_options' choices), because workers follow the notebook's image. Templates such as an
unlisted choice's "{value}" are not images: a notebook started from one gets Dask clusters only
with an explicit `image=` from this list. Maps are ranged in key order, so the list (and the
settings' checksum) is the same on every render.
*/}}
{{- define "neuropixels-hub.images" -}}
{{- $images := list (include "neuropixels-hub.image" .) -}}
{{- $single := (.Values.jupyterhub | default dict).singleuser | default dict -}}
{{- range $profile := $single.profileList | default list -}}
{{- $overrides := list ($profile.kubespawner_override | default dict) -}}
{{- range $optionName, $option := $profile.profile_options | default dict -}}
{{- range $choiceName, $choice := $option.choices | default dict -}}
{{- $overrides = append $overrides ($choice.kubespawner_override | default dict) -}}
{{- end -}}
{{- end -}}
{{- range $override := $overrides -}}
{{- if and $override.image (not (contains "{" (toString $override.image))) -}}
{{- $images = append $images (toString $override.image) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $images | uniq | toJson -}}
{{- end -}}

{{/* Mirrors "dask-gateway.fullname" of the dask-gateway chart, which names traefik and the api. */}}
{{- define "neuropixels-hub.gatewayFullname" -}}
{{- $gw := index .Values "dask-gateway" | default dict -}}
{{- if $gw.fullnameOverride -}}
{{- $gw.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default "dask-gateway" $gw.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "neuropixels-hub.gatewayName" -}}
{{- default "dask-gateway" (index .Values "dask-gateway" | default dict).nameOverride -}}
{{- end -}}

{{- define "neuropixels-hub.traefikName" -}}
{{- include "neuropixels-hub.gatewayFullname" . | printf "traefik-%s" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The gateway's path prefix; the hub proxies /services/dask-gateway/ to traefik. */}}
{{- define "neuropixels-hub.gatewayPrefix" -}}
{{- $gw := index .Values "dask-gateway" | default dict -}}
{{- (($gw.gateway | default dict).prefix | default "/services/dask-gateway") | trimSuffix "/" -}}
{{- end -}}

{{- define "neuropixels-hub.traefikPorts" -}}
{{- $gw := index .Values "dask-gateway" | default dict -}}
{{- $ports := ((($gw.traefik | default dict).service | default dict).ports | default dict) -}}
{{- $web := (($ports.web | default dict).port | default 80) | int -}}
{{- $tcp := ($ports.tcp | default dict).port | default "web" -}}
{{- if eq (toString $tcp) "web" }}{{ $tcp = $web }}{{ end -}}
{{- dict "web" $web "tcp" ($tcp | int) | toJson -}}
{{- end -}}

{{/* NEUROPIXELS_DASK__* variables: the package's configuration contract (neuropixels_dask.yaml). */}}
{{- define "neuropixels-hub.dataEnv" -}}
{{- $env := dict
  "NEUROPIXELS_DASK__CACHE__URL" .Values.cache.url
  "NEUROPIXELS_DASK__S3__ANON" (ternary "true" "false" .Values.s3.anon)
  "NEUROPIXELS_DASK__S3__REGION" .Values.s3.region
  "NEUROPIXELS_DASK__S3__REQUESTER_PAYS" (ternary "true" "false" .Values.s3.requesterPays)
-}}
{{- with .Values.s3.endpointUrl -}}
{{- $_ := set $env "NEUROPIXELS_DASK__S3__ENDPOINT_URL" . -}}
{{- end -}}
{{- $env | toJson -}}
{{- end -}}

{{/* AWS credentials as secretKeyRefs; never values. */}}
{{- define "neuropixels-hub.secretEnv" -}}
{{- $env := dict -}}
{{- with .Values.credentials.existingSecret -}}
{{- $secret := . -}}
{{- $keys := $.Values.credentials.keys -}}
{{- $_ := set $env "AWS_ACCESS_KEY_ID" (dict "name" $secret "key" $keys.accessKeyId) -}}
{{- $_ := set $env "AWS_SECRET_ACCESS_KEY" (dict "name" $secret "key" $keys.secretAccessKey) -}}
{{- if $keys.sessionToken -}}
{{- $_ := set $env "AWS_SESSION_TOKEN" (dict "name" $secret "key" $keys.sessionToken) -}}
{{- end -}}
{{- end -}}
{{- $env | toJson -}}
{{- end -}}

{{/* Fail early, with the key to fix, on combinations the schema cannot express. */}}
{{- define "neuropixels-hub.validate" -}}
{{- $jh := .Values.jupyterhub | default dict -}}
{{- $gw := index .Values "dask-gateway" | default dict -}}
{{- if not (and $jh.enabled $gw.enabled) -}}
{{- fail "jupyterhub.enabled and dask-gateway.enabled must both stay true: this chart wires the two together (the gateway reads its hub token from the jupyterhub chart's Secret `hub`, the hub proxies /services/dask-gateway/ to the gateway, and the NetworkPolicies and settings name both); for one of them alone, install its official chart directly" -}}
{{- end -}}
{{- if not (kindIs "map" (index (($jh.hub | default dict).services | default dict) "dask-gateway")) -}}
{{- fail "jupyterhub.hub.services.dask-gateway must stay: the jupyterhub chart generates the gateway's hub token for that service (Secret `hub`, key hub.services.dask-gateway.apiToken)" -}}
{{- end -}}
{{- if (($jh.singleuser | default dict).cloudMetadata | default dict).blockWithIptables -}}
{{- fail "jupyterhub.singleuser.cloudMetadata.blockWithIptables must stay false: its iptables init container runs as root and privileged, which securityContext.pod.runAsNonRoot forbids, so the kubelet would refuse every user pod; the NetworkPolicies block the cloud metadata server instead" -}}
{{- end -}}
{{- $backend := (($gw.gateway | default dict).backend | default dict) -}}
{{- range $role := list "scheduler" "worker" -}}
{{- range $what := list "cores" "memory" -}}
{{- range $kind := list "request" "limit" -}}
{{- if not (kindIs "invalid" (index ((index (index $backend $role | default dict) $what) | default dict) $kind)) -}}
{{- fail (printf "dask-gateway.gateway.backend.%s.%s.%s is set: Dask pod sizes come from dask.%s (requests = limits; workers within the users' cluster options), so that no limit can fall below a request; remove it" $role $what $kind $role) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- include "neuropixels-hub.validateLogin" . -}}
{{- if and .Values.credentials.existingSecret .Values.s3.anon -}}
{{- fail "credentials.existingSecret is set but s3.anon is true: anonymous reads would ignore the credentials; set s3.anon=false" -}}
{{- end -}}
{{- if $jh.fullnameOverride -}}
{{- fail "jupyterhub.fullnameOverride must stay empty: the dask-gateway wiring uses the hub's fixed object names (hub, proxy-public)" -}}
{{- end -}}
{{- if ne (include "neuropixels-hub.gatewayPrefix" .) "/services/dask-gateway" -}}
{{- fail "dask-gateway.gateway.prefix must be /services/dask-gateway: the hub proxies its dask-gateway service there" -}}
{{- end -}}
{{- $roles := ($jh.hub | default dict).loadRoles | default dict -}}
{{- $serverScopes := (index $roles "server" | default dict).scopes | default list -}}
{{- if not (or (has "access:services!service=dask-gateway" $serverScopes) (has "access:services" $serverScopes) (has "inherit" $serverScopes)) -}}
{{- fail "jupyterhub.hub.loadRoles.server.scopes must include access:services!service=dask-gateway: notebooks reach dask-gateway with their server's token, and the gateway refuses tokens without access to its service" -}}
{{- end -}}
{{- range $what := list "cores" "memory" -}}
{{- $opt := index $.Values.dask.worker $what -}}
{{- if or (lt (float64 $opt.default) (float64 $opt.min)) (gt (float64 $opt.default) (float64 $opt.max)) -}}
{{- fail (printf "dask.worker.%s.default (%v) must lie between dask.worker.%s.min (%v) and dask.worker.%s.max (%v)" $what $opt.default $what $opt.min $what $opt.max) -}}
{{- end -}}
{{- end -}}
{{- $limits := .Values.dask.limits -}}
{{- if gt (float64 .Values.dask.worker.cores.max) (float64 $limits.maxCoresPerCluster) -}}
{{- fail (printf "dask.worker.cores.max (%v) exceeds dask.limits.maxCoresPerCluster (%v): no worker of that size could ever start" .Values.dask.worker.cores.max $limits.maxCoresPerCluster) -}}
{{- end -}}
{{- if gt (float64 .Values.dask.worker.memory.max) (float64 $limits.maxMemoryPerCluster) -}}
{{- fail (printf "dask.worker.memory.max (%v) exceeds dask.limits.maxMemoryPerCluster (%v)" .Values.dask.worker.memory.max $limits.maxMemoryPerCluster) -}}
{{- end -}}
{{- if gt (addf .Values.dask.scheduler.cores .Values.dask.worker.cores.min) (float64 $limits.maxCoresPerCluster) -}}
{{- fail (printf "dask.scheduler.cores plus one smallest worker exceed dask.limits.maxCoresPerCluster (%v)" $limits.maxCoresPerCluster) -}}
{{- end -}}
{{- if gt (addf .Values.dask.scheduler.memory .Values.dask.worker.memory.min) (float64 $limits.maxMemoryPerCluster) -}}
{{- fail (printf "dask.scheduler.memory plus one smallest worker exceed dask.limits.maxMemoryPerCluster (%v)" $limits.maxMemoryPerCluster) -}}
{{- end -}}
{{- end -}}

{{/*
The settings document (JSON) read by the extraConfig snippets; see values.yaml for each key.
Its shape is versioned so a snippet can refuse a document it does not understand.
*/}}
{{- define "neuropixels-hub.settings" -}}
{{- $ns := .Release.Namespace -}}
{{- $traefik := include "neuropixels-hub.traefikName" . -}}
{{- $ports := include "neuropixels-hub.traefikPorts" . | fromJson -}}
{{- $prefix := include "neuropixels-hub.gatewayPrefix" . -}}
{{- $gateway := dict
  "address" (printf "http://proxy-public%s" $prefix)
  "proxyAddress" (printf "gateway://%s.%s:%v" $traefik $ns $ports.tcp)
  "publicAddress" (printf "%s/" $prefix)
  "serviceUrl" (printf "http://%s.%s:%v" $traefik $ns $ports.web)
-}}
{{- $image := dict
  "ref" (include "neuropixels-hub.image" .)
  "pullPolicy" .Values.image.pullPolicy
  "pullSecrets" .Values.image.pullSecrets
  "allowed" (include "neuropixels-hub.images" . | fromJsonArray)
-}}
{{- $settings := dict
  "version" 1
  "image" $image
  "env" (include "neuropixels-hub.dataEnv" . | fromJson)
  "secretEnv" (include "neuropixels-hub.secretEnv" . | fromJson)
  "serviceAccountName" (include "neuropixels-hub.serviceAccountName" .)
  "gateway" $gateway
  "dask" .Values.dask
  "securityContext" .Values.securityContext
  "scratch" .Values.scratch
  "notebook" (merge (dict "jupyterConfigMap" (include "neuropixels-hub.jupyterConfigName" .)) (deepCopy .Values.notebook))
-}}
{{- $settings | toJson -}}
{{- end -}}

{{/*
Egress rules shared by notebooks and Dask pods: DNS, the object store, the node's workload-identity
endpoint when asked for (networkPolicy.workloadIdentity), and extras.
*/}}
{{- define "neuropixels-hub.commonEgress" -}}
# DNS, wherever the cluster's resolver lives.
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
# The object store (networkPolicy.s3Egress).
- to:
    {{- toYaml .Values.networkPolicy.s3Egress.to | nindent 4 }}
  ports:
    {{- toYaml .Values.networkPolicy.s3Egress.ports | nindent 4 }}
{{- if eq .Values.networkPolicy.workloadIdentity "gke" }}
# GKE Workload Identity: the GKE metadata server (Dataplane V2 serves it on 169.254.169.254:80,
# Calico clusters on 169.254.169.252:988).
- to:
    - ipBlock:
        cidr: 169.254.169.254/32
  ports:
    - port: 80
      protocol: TCP
- to:
    - ipBlock:
        cidr: 169.254.169.252/32
  ports:
    - port: 988
      protocol: TCP
{{- else if eq .Values.networkPolicy.workloadIdentity "eks-pod-identity" }}
# EKS Pod Identity: the node's Pod Identity agent.
- to:
    - ipBlock:
        cidr: 169.254.170.23/32
    - ipBlock:
        cidr: fd00:ec2::23/128
  ports:
    - port: 80
      protocol: TCP
{{- end }}
{{- with .Values.networkPolicy.extraEgress }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Who may log in: refuse an authenticator that admits anyone. z2jh's default, "dummy", lets in any
user name with any password (JupyterHub 5 sets its allow_all when no user is listed); allow_all
anywhere admits every account the identity provider knows (any GitHub user, say); NativeAuthenticator
with open_signup lets anyone create an account and log in. The trial mode, a shared password plus
an allow list, is accepted. The authenticator is read from jupyterhub.hub.config, where z2jh takes
it from (one configured only in hub.extraConfig Python is not seen: set authenticator_class in
hub.config as well). helm/README.md, "Who can log in", documents each way.
*/}}
{{- define "neuropixels-hub.validateLogin" -}}
{{- $config := ((.Values.jupyterhub | default dict).hub | default dict).config | default dict -}}
{{- $class := (($config.JupyterHub | default dict).authenticator_class | default "dummy") | toString -}}
{{- $short := regexReplaceAll "^.*\\." ($class | lower) "" -}}
{{- $how := "configure who may log in in jupyterhub.hub.config: GitHub OAuth limited to your organisation or team (authenticator_class: github, GitHubOAuthenticator.client_id, client_secret, oauth_callback_url and allowed_organizations; helm/examples/github-oauth.yaml), generic OAuth/OIDC (generic-oauth, GenericOAuthenticator.allowed_groups or allowed_users), CILogon (cilogon, CILogonOAuthenticator.allowed_idps), or NativeAuthenticator (native: an admin approves each account); for a trial only, a shared password plus an allow list (shared-password, SharedPasswordAuthenticator.user_password and Authenticator.allowed_users; helm/examples/trial.yaml). See helm/README.md, \"Who can log in\"" -}}
{{- range $section, $entries := $config -}}
{{- if and (kindIs "map" $entries) (eq (toString (index $entries "allow_all")) "true") -}}
{{- fail (printf "jupyterhub.hub.config.%s.allow_all is true: it lets in every account the identity provider knows, not only your users; remove it and list who may log in instead (allowed_users, allowed_organizations, allowed_groups, …). To %s" $section $how) -}}
{{- end -}}
{{- end -}}
{{- if has $short (list "dummy" "dummyauthenticator") -}}
{{- fail (printf "jupyterhub.hub.config.JupyterHub.authenticator_class is %q (the jupyterhub chart's default when unset): it lets anyone log in with any user name and any password, and every such user gets notebooks and Dask clusters. Before installing, %s" $class $how) -}}
{{- end -}}
{{- if has $short (list "shared-password" "sharedpasswordauthenticator") -}}
{{- $shared := $config.SharedPasswordAuthenticator | default dict -}}
{{- $password := $shared.user_password | default "" | toString -}}
{{- if lt (len $password) 8 -}}
{{- fail "jupyterhub.hub.config.SharedPasswordAuthenticator.user_password must be set, at least 8 characters (trial mode: a shared password plus an allow list); generate one, e.g. `openssl rand -hex 16`" -}}
{{- end -}}
{{- $allowed := concat (($config.Authenticator | default dict).allowed_users | default list) ($shared.allowed_users | default list) -}}
{{- if not $allowed -}}
{{- fail "jupyterhub.hub.config.Authenticator.allowed_users must list the user names of the trial (shared-password mode): without the list, anybody who learns the password could log in under any name" -}}
{{- end -}}
{{- end -}}
{{- if and (has $short (list "native" "nativeauthenticator")) (eq (toString (($config.NativeAuthenticator | default dict).open_signup)) "true") -}}
{{- fail "jupyterhub.hub.config.NativeAuthenticator.open_signup is true: anyone could sign up and log in at once; remove it, so that an admin approves each new account (/hub/authorize)" -}}
{{- end -}}
{{- end -}}

{{/*
Values of ours that the subcharts' own templates must see, written into their values before they
render (see settings-checksum/rendered/before/the/subcharts.yaml for why that works). Renders
nothing.
- metrics.enabled -> a hub service `prometheus` and its role (read:metrics), for the
  ServiceMonitor's token (templates/metrics.yaml).
- image.pullSecrets -> jupyterhub.singleuser.image.pullSecrets: z2jh gives its image pullers
  (the hook-image-puller of every install and upgrade, the continuous one) only those and
  jupyterhub.imagePullSecrets; without them the hook cannot pull a private image, and
  hook-image-awaiter waits out helm's timeout.
*/}}
{{- define "neuropixels-hub.intoSubcharts" -}}
{{- $hub := (.Values.jupyterhub | default dict).hub -}}
{{- if and .Values.metrics.enabled (kindIs "map" $hub) -}}
{{- /* Prometheus' hub token: the jupyterhub chart generates it into the Secret `hub`
(hub.services.prometheus.apiToken), the ServiceMonitor reads it there; it may read metrics
and nothing else. */ -}}
{{- $services := $hub.services | default dict -}}
{{- $_ := set $services "prometheus" (merge (index $services "prometheus" | default dict) (dict "display" false)) -}}
{{- $_ := set $hub "services" $services -}}
{{- $roles := $hub.loadRoles | default dict -}}
{{- $_ := set $roles "prometheus-metrics" (dict "description" "Prometheus reads the hub's metrics, nothing else" "scopes" (list "read:metrics") "services" (list "prometheus")) -}}
{{- $_ := set $hub "loadRoles" $roles -}}
{{- end -}}
{{- $single := (.Values.jupyterhub | default dict).singleuser -}}
{{- if and (kindIs "map" $single) .Values.image.pullSecrets -}}
{{- $image := $single.image | default dict -}}
{{- $_ := set $image "pullSecrets" (concat ($image.pullSecrets | default list) .Values.image.pullSecrets | uniq) -}}
{{- $_ := set $single "image" $image -}}
{{- end -}}
{{- end -}}
