{{/* The release's resource name (release-chart, or fullnameOverride), at most 63 characters. */}}
{{- define "dakera-actors.fullname" -}}
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

{{- define "dakera-actors.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The headless Service: it gives every pod a stable DNS name, pod-N.<headless>.<ns>.svc. */}}
{{- define "dakera-actors.headless" -}}
{{- printf "%s-gossip" (include "dakera-actors.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The domain every pod's name is under: <headless>.<namespace>.svc.<clusterDomain>. */}}
{{- define "dakera-actors.podDomain" -}}
{{- printf "%s.%s.svc.%s" (include "dakera-actors.headless" .) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}

{{/* DAKERA_CLUSTER_SEEDS: the gossip address of every pod, pod-0 .. pod-(replicaCount-1). */}}
{{- define "dakera-actors.seeds" -}}
{{- $full := include "dakera-actors.fullname" . -}}
{{- $domain := include "dakera-actors.podDomain" . -}}
{{- $seeds := list -}}
{{- range $i := until (int .Values.dakera.replicaCount) -}}
{{- $seeds = append $seeds (printf "%s-%d.%s:%d" $full $i $domain (int $.Values.dakera.gossipPort)) -}}
{{- end -}}
{{- join "," $seeds -}}
{{- end -}}

{{- define "dakera-actors.secretName" -}}
{{- default (include "dakera-actors.fullname" .) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "dakera-actors.s3SecretName" -}}
{{- default (include "dakera-actors.fullname" .) .Values.storage.s3.existingSecret -}}
{{- end -}}

{{- define "dakera-actors.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dakera-actors.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dakera-actors.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "dakera-actors.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Checks every manifest depends on; rendering stops with the reason. */}}
{{- define "dakera-actors.validate" -}}
{{- $n := int .Values.dakera.replicaCount -}}
{{- if lt $n 3 -}}
{{- fail (printf "dakera.replicaCount must be 3 or more (got %d): a cluster of fewer nodes cannot drain one for an upgrade and keep a quorum" $n) -}}
{{- end -}}
{{- if not .Values.auth.existingSecret -}}
{{- if not .Values.auth.rootApiKey -}}
{{- fail "set auth.rootApiKey (DAKERA_ROOT_API_KEY) or auth.existingSecret" -}}
{{- end -}}
{{- if not .Values.auth.gossipKey -}}
{{- fail "set auth.gossipKey (DAKERA_GOSSIP_KEY, `openssl rand -base64 32`) or auth.existingSecret" -}}
{{- end -}}
{{- end -}}
{{- if not (has .Values.storage.type (list "filesystem" "s3")) -}}
{{- fail (printf "storage.type must be filesystem or s3 (got %s)" .Values.storage.type) -}}
{{- end -}}
{{- if and (eq .Values.storage.type "s3") (not .Values.storage.s3.endpoint) -}}
{{- fail "storage.s3.endpoint (DAKERA_S3_ENDPOINT) is required with storage.type s3" -}}
{{- end -}}
{{- if ne (empty .Values.storage.s3.accessKey) (empty .Values.storage.s3.secretKey) -}}
{{- fail "set both storage.s3.accessKey and storage.s3.secretKey, or neither" -}}
{{- end -}}
{{- if not (has .Values.dakera.writeAck (list "primary" "quorum" "all")) -}}
{{- fail (printf "dakera.writeAck must be primary, quorum or all (got %s)" .Values.dakera.writeAck) -}}
{{- end -}}
{{- $needed := add (int .Values.lifecycle.drainTimeoutSeconds) (int .Values.lifecycle.settleTimeoutSeconds) 30 -}}
{{- if lt (int .Values.lifecycle.terminationGracePeriodSeconds) $needed -}}
{{- fail (printf "lifecycle.terminationGracePeriodSeconds must be at least drainTimeoutSeconds + settleTimeoutSeconds + 30 = %d" $needed) -}}
{{- end -}}
{{- end -}}
