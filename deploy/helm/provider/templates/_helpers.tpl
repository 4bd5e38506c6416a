{{/* The chart name, or nameOverride. */}}
{{- define "provider.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: fullnameOverride, else RELEASE-provider (or RELEASE when it already says provider). */}}
{{- define "provider.fullname" -}}
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

{{- define "provider.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of the service pods. Never app.kubernetes.io/managed-by=provider: that marks job pods. */}}
{{- define "provider.selectorLabels" -}}
app.kubernetes.io/name: {{ include "provider.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "provider.labels" -}}
helm.sh/chart: {{ include "provider.chart" . }}
{{ include "provider.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "provider.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "provider.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "provider.secretName" -}}
{{- if .Values.secret.create }}
{{- include "provider.fullname" . }}
{{- else }}
{{- required "set secret.existingSecret (a Secret of PROVIDER_* variables) or secret.create" .Values.secret.existingSecret }}
{{- end }}
{{- end }}

{{/* Where Jobs, their Secrets and the Lease live: config.compute.kubernetes.namespace, else the release namespace. */}}
{{- define "provider.jobNamespace" -}}
{{- dig "compute" "kubernetes" "namespace" .Release.Namespace .Values.config }}
{{- end }}

{{/* provider.yaml: .Values.config over the defaults that depend on the release. */}}
{{- define "provider.config" -}}
{{- $apiUrl := printf "http://%s.%s.svc.cluster.local:%v" (include "provider.fullname" .) .Release.Namespace .Values.service.port }}
{{- $defaults := dict "compute" (dict "api_url" $apiUrl "kubernetes" (dict "namespace" .Release.Namespace)) }}
{{- toYaml (mustMergeOverwrite $defaults (deepCopy .Values.config)) }}
{{- end }}
