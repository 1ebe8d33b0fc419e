{{/*
Chart name, truncated to the 63 characters a label value may hold.
*/}}
{{- define "sigil.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: `<release>-sigil`, or the release name when it
already contains the chart name.
*/}}
{{- define "sigil.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "sigil.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Standard labels on every object.
*/}}
{{- define "sigil.labels" -}}
helm.sh/chart: {{ include "sigil.chart" . }}
{{ include "sigil.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sigil
{{- end }}

{{/*
Labels that select the controller Pods (never change them across upgrades: a
Deployment's selector is immutable).
*/}}
{{- define "sigil.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sigil.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/*
Name of the ServiceAccount the controller runs as.
*/}}
{{- define "sigil.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sigil.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The controller image: repository@digest, or repository:tag (tag defaults to appVersion).
*/}}
{{- define "sigil.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Rules for what the controller does in the namespaces it serves: in every namespace
(ClusterRole) or only in watchNamespace (Role). SealedSecrets, ExternalSecrets and
SecretStores and Rotations, the Secrets it writes and reads, and its Events.
*/}}
{{- define "sigil.unsealRules" -}}
- apiGroups: ["sigil.dev"]
  resources: ["sealedsecrets", "externalsecrets", "secretstores", "rotations", "rotationpolicies"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["sigil.dev"]
  resources: ["sealedsecrets/status", "externalsecrets/status", "secretstores/status", "rotations/status", "rotationpolicies/status"]
  verbs: ["get", "patch", "update"]
# A RotationPolicy's schedule: the controller creates its Rotations (requestedBy
# schedule/<policy>).
- apiGroups: ["sigil.dev"]
  resources: ["rotations"]
  verbs: ["create"]
# The Secrets it writes (unsealed, or synced from a store): written by server-side
# apply, watched by label to restore them when edited or deleted by hand, deleted when
# no longer wanted. Also the Secrets a store's credentials are read from.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# A Vault store's CA certificates (`caProvider` of type ConfigMap).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get"]
# The role an AWS web-identity store assumes, from its ServiceAccount's
# eks.amazonaws.com/role-arn annotation (read only).
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get"]
{{- if not .Values.stores.tokenAccounts }}
# ServiceAccount tokens for Vault's Kubernetes auth and AWS web identity
# (`serviceAccountRef`), from the TokenRequest API, for any account (as External Secrets
# Operator needs); list the accounts in `stores.tokenAccounts` to grant only those. This
# grants no access to the ServiceAccounts themselves.
- apiGroups: [""]
  resources: ["serviceaccounts/token"]
  verbs: ["create"]
{{- end }}
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
# The workloads that consume a Secret: listed to find them (a Rotation's restart step)
# and watched for the `sigil.dev/reload` opt-in; patched to roll them, which writes one
# pod-template annotation (sigil.dev/restarted-for) and nothing else. Rollout progress
# is read from their own status, so ReplicaSets and Pods are not needed.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}

{{/*
Rules that only a ClusterRole can grant, rendered only when the controller serves every
namespace: ClusterSecretStores and ClusterExternalSecrets, and the Namespaces whose
labels their `conditions` and selectors choose. With watchNamespace set, only
namespaced SecretStores are served, and ClusterExternalSecrets are not watched.
*/}}
{{- define "sigil.clusterRules" -}}
- apiGroups: ["sigil.dev"]
  resources: ["clustersecretstores", "clusterexternalsecrets"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["sigil.dev"]
  resources: ["clustersecretstores/status", "clusterexternalsecrets/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
# The ExternalSecret of a ClusterExternalSecret in each namespace it chooses: written by
# server-side apply, deleted when the namespace stops matching or the name changes.
# Only ExternalSecrets it owns are changed; one that is not its own is left alone.
- apiGroups: ["sigil.dev"]
  resources: ["externalsecrets"]
  verbs: ["create", "patch", "delete"]
{{- end }}

{{/*
Name of the API's objects: `<full name>-api` (the full name is cut to leave room for
the suffix, so the API never takes the controller's name).
*/}}
{{- define "sigil.api.fullname" -}}
{{- printf "%s-api" (include "sigil.fullname" . | trunc 59 | trimSuffix "-") }}
{{- end }}

{{/*
Standard labels on the API's objects.
*/}}
{{- define "sigil.api.labels" -}}
helm.sh/chart: {{ include "sigil.chart" . }}
{{ include "sigil.api.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sigil
{{- end }}

{{/*
Labels that select the API Pods (immutable, like the controller's).
*/}}
{{- define "sigil.api.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sigil.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: api
{{- end }}

{{/*
Name of the ServiceAccount the API runs as.
*/}}
{{- define "sigil.api.serviceAccountName" -}}
{{- if .Values.api.serviceAccount.create }}
{{- default (include "sigil.api.fullname" .) .Values.api.serviceAccount.name }}
{{- else }}
{{- required "api.serviceAccount.name is required when api.serviceAccount.create is false" .Values.api.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The API image: repository@digest, or repository:tag (tag defaults to appVersion).
*/}}
{{- define "sigil.api.image" -}}
{{- if .Values.api.image.digest }}
{{- printf "%s@%s" .Values.api.image.repository .Values.api.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.api.image.repository (default .Chart.AppVersion .Values.api.image.tag) }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding the API's TLS certificate and key.
*/}}
{{- define "sigil.api.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "sigil.api.fullname" .)) .Values.api.tls.secretName }}
{{- end }}

{{/*
The controller's internal HTTP base URL, through the controller Service: only the
leading replica is ready, so the Service routes to the leader.
*/}}
{{- define "sigil.controllerUrl" -}}
{{- printf "http://%s-metrics.%s.svc:%v" (include "sigil.fullname" .) .Release.Namespace .Values.service.port }}
{{- end }}

{{/*
What the API does in the namespaces Rotations are created in: record a Rotation (and
read it back for get, list and idempotent replays), and one Event per accepted Rotation.
Events are granted in both groups, like the controller's.
*/}}
{{- define "sigil.api.rotationRules" -}}
# Record the Rotations the caller's SubjectAccessReview allowed, and read them back
# (GET, list, idempotent replays). Never update, patch or delete: the controller does
# the work and writes the status.
- apiGroups: ["sigil.dev"]
  resources: ["rotations"]
  verbs: ["create", "get", "list"]
# One Event per accepted Rotation (the audit trail in the cluster).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
Read the ExternalSecret a Rotation targets, to refuse an unknown one (422
unknown_external_secret) before anything is created.
*/}}
{{- define "sigil.api.externalSecretRules" -}}
# Refuse a Rotation of an unknown ExternalSecret with a clear 422 before creating
# anything. Read only, by name: no list, no watch.
- apiGroups: ["sigil.dev"]
  resources: ["externalsecrets"]
  verbs: ["get"]
{{- end }}
