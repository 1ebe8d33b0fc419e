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
  resources: ["sealedsecrets", "externalsecrets", "secretstores", "rotations"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["sigil.dev"]
  resources: ["sealedsecrets/status", "externalsecrets/status", "secretstores/status", "rotations/status"]
  verbs: ["get", "patch", "update"]
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
# ServiceAccount tokens for Vault's Kubernetes auth and AWS web identity
# (`serviceAccountRef`), from the TokenRequest API. This grants no access to the
# ServiceAccounts themselves.
- apiGroups: [""]
  resources: ["serviceaccounts/token"]
  verbs: ["create"]
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
namespace: ClusterSecretStores, and the Namespaces whose labels their `conditions`
select. With watchNamespace set, only namespaced SecretStores are served.
*/}}
{{- define "sigil.clusterRules" -}}
- apiGroups: ["sigil.dev"]
  resources: ["clustersecretstores"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["sigil.dev"]
  resources: ["clustersecretstores/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
{{- end }}
