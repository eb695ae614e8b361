{{/*
Names and labels, defined once. Kubernetes names are DNS labels: cut to 63
characters, no trailing dash.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "llmquota.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every resource name: <release>-<name>, or fullnameOverride. */}}
{{- define "llmquota.fullname" -}}
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

{{/*
A component's name: <fullname>-<component>, within 63 characters (or .max: a
StatefulSet's name must leave room for the revision hash in its pods' labels).
*/}}
{{- define "llmquota.componentName" -}}
{{- $component := .component -}}
{{- $max := int (default 63 .max) -}}
{{- $prefix := include "llmquota.fullname" .context | trunc (int (sub (sub $max 1) (len $component))) | trimSuffix "-" -}}
{{- printf "%s-%s" $prefix $component -}}
{{- end -}}

{{- define "llmquota.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "llmquota.labels" -}}
helm.sh/chart: {{ include "llmquota.chart" . }}
app.kubernetes.io/name: {{ include "llmquota.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llmquota
{{- end -}}

{{/* Selector labels of the operator pods (immutable: never add to them). */}}
{{- define "llmquota.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llmquota.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Selector labels of the gateway pods (gateway.enabled). */}}
{{- define "llmquota.gatewaySelectorLabels" -}}
app.kubernetes.io/name: {{ include "llmquota.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{/* Selector labels of the internal Redis pod. */}}
{{- define "llmquota.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "llmquota.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end -}}

{{- define "llmquota.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "llmquota.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The operator image, repository:tag or repository@digest. */}}
{{- define "llmquota.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "llmquota.sidecarImage" -}}
{{- default (include "llmquota.image" .) .Values.sidecar.image -}}
{{- end -}}

{{- define "llmquota.redisName" -}}
{{- include "llmquota.componentName" (dict "context" . "component" "redis" "max" 52) -}}
{{- end -}}

{{- define "llmquota.webhookName" -}}
{{- include "llmquota.componentName" (dict "context" . "component" "webhook") -}}
{{- end -}}

{{- define "llmquota.webhookCertSecretName" -}}
{{- include "llmquota.componentName" (dict "context" . "component" "webhook-tls") -}}
{{- end -}}

{{- define "llmquota.sidecarConfigMapName" -}}
{{- include "llmquota.componentName" (dict "context" . "component" "sidecar") -}}
{{- end -}}

{{/*
Redis: exactly one of external (url or existingSecret) and internal. Renders
nothing; fails the render with a message naming the values when both or neither
are set.
*/}}
{{- define "llmquota.validateRedis" -}}
{{- $external := or .Values.redis.external.url .Values.redis.external.existingSecret.name .Values.redis.external.sentinel.hosts .Values.redis.external.cluster.nodes -}}
{{- if and $external .Values.redis.internal.enabled -}}
{{- fail "redis: set either redis.external.url / redis.external.existingSecret.name / redis.external.sentinel.hosts / redis.external.cluster.nodes or redis.internal.enabled, not both (add --set redis.internal.enabled=false)" -}}
{{- end -}}
{{- if not (or $external .Values.redis.internal.enabled) -}}
{{- fail "redis: set redis.external.url, redis.external.existingSecret.name, redis.external.sentinel.hosts, redis.external.cluster.nodes or redis.internal.enabled=true" -}}
{{- end -}}
{{- if and .Values.redis.external.sentinel.hosts (or .Values.redis.external.url .Values.redis.external.existingSecret.name .Values.redis.external.cluster.nodes) -}}
{{- fail "redis: redis.external.sentinel.hosts builds the URL; leave redis.external.url, redis.external.existingSecret.name and redis.external.cluster.nodes empty" -}}
{{- end -}}
{{- if and .Values.redis.external.cluster.nodes (or .Values.redis.external.url .Values.redis.external.existingSecret.name) -}}
{{- fail "redis: redis.external.cluster.nodes builds the URL; leave redis.external.url and redis.external.existingSecret.name empty" -}}
{{- end -}}
{{- end -}}

{{/* The redis+sentinel:// URL of redis.external.sentinel. */}}
{{- define "llmquota.sentinelRedisUrl" -}}
{{- with .Values.redis.external.sentinel -}}
{{- printf "%s://%s/%s/%d" (ternary "rediss+sentinel" "redis+sentinel" .tls) (join "," .hosts) .service (int .db) -}}
{{- end -}}
{{- end -}}

{{/* The redis+cluster:// URL of redis.external.cluster. */}}
{{- define "llmquota.clusterRedisUrl" -}}
{{- with .Values.redis.external.cluster -}}
{{- printf "%s://%s" (ternary "rediss+cluster" "redis+cluster" .tls) (join "," .nodes) -}}
{{- end -}}
{{- end -}}

{{/*
The Secret (name and key) holding the Redis URL: the user's `existingSecret`, else
the chart's own (redis-url.yaml). The operator reads it as an environment variable and
hands it on to injected sidecars the same way, never as a command-line argument.
*/}}
{{- define "llmquota.redisSecretName" -}}
{{- if .Values.redis.external.existingSecret.name -}}
{{- .Values.redis.external.existingSecret.name -}}
{{- else -}}
{{- include "llmquota.componentName" (dict "context" . "component" "redis-url") -}}
{{- end -}}
{{- end -}}

{{- define "llmquota.redisSecretKey" -}}
{{- if .Values.redis.external.existingSecret.name -}}
{{- .Values.redis.external.existingSecret.key -}}
{{- else -}}
url
{{- end -}}
{{- end -}}

{{/* The Redis URL the chart's own Secret holds: the external URL, else a Sentinel
group's, else a Cluster's, else the internal Redis'. */}}
{{- define "llmquota.redisUrl" -}}
{{- if .Values.redis.external.url -}}
{{- .Values.redis.external.url -}}
{{- else if .Values.redis.external.sentinel.hosts -}}
{{- include "llmquota.sentinelRedisUrl" . -}}
{{- else if .Values.redis.external.cluster.nodes -}}
{{- include "llmquota.clusterRedisUrl" . -}}
{{- else -}}
{{- include "llmquota.internalRedisUrl" . -}}
{{- end -}}
{{- end -}}

{{/* URL of the internal Redis, through its Service. */}}
{{- define "llmquota.internalRedisUrl" -}}
{{- printf "redis://%s.%s.svc:6379/0" (include "llmquota.redisName" .) .Release.Namespace -}}
{{- end -}}
