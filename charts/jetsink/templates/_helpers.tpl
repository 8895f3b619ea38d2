{{/* Names, labels and images shared by the templates. */}}

{{- define "jetsink.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
jetsink.fullname is "<release>-<chart>", or the release name alone when it
already contains the chart name, cut to 63 characters (a DNS label).
*/}}
{{- define "jetsink.fullname" -}}
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

{{- define "jetsink.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "jetsink.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jetsink.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: manager
{{- end }}

{{- define "jetsink.labels" -}}
helm.sh/chart: {{ include "jetsink.chart" . }}
{{ include "jetsink.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: jetsink
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "jetsink.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "jetsink.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* jetsink.image is the manager's image; its tag defaults to appVersion. */}}
{{- define "jetsink.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* jetsink.workerImage falls back field by field to the manager's image. */}}
{{- define "jetsink.workerImage" -}}
{{- $repo := default .Values.image.repository .Values.workerImage.repository }}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.workerImage.tag }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}

{{/*
jetsink.leaderElectionID names the leader-election Lease: one per release,
so two releases in a namespace never share a leader.
*/}}
{{- define "jetsink.leaderElectionID" -}}
{{- default (printf "%s-manager.jetsink.dev" (include "jetsink.fullname" .)) .Values.leaderElection.id }}
{{- end }}

{{/*
jetsink.allowedWorkerImages is the value of --allowed-worker-images: "*"
for any image, "none" for an empty list, else the patterns.
*/}}
{{- define "jetsink.allowedWorkerImages" -}}
{{- $allowed := .Values.workerImagePolicy.allowed }}
{{- if and (gt (len $allowed) 1) (or (has "*" $allowed) (has "none" $allowed)) }}
{{- fail "workerImagePolicy.allowed: \"*\" (any image) and \"none\" stand alone: in a list \"*\" would match only images without a \"/\"; [] forbids every override" }}
{{- end }}
{{- if not $allowed }}none{{ else }}{{ join "," $allowed }}{{ end }}
{{- end }}

{{- define "jetsink.metricsServiceName" -}}
{{- include "jetsink.fullname" . }}-metrics
{{- end }}

{{/* jetsink.metricsCertPath is where metrics.tls.secretName is mounted. */}}
{{- define "jetsink.metricsCertPath" -}}
/etc/jetsink/metrics-certs
{{- end }}
