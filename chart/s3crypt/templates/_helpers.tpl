{{- define "s3crypt.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "s3crypt.fullname" -}}
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

{{- define "s3crypt.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "s3crypt.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "s3crypt.selectorLabels" -}}
app.kubernetes.io/name: {{ include "s3crypt.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: proxy
{{- end -}}

{{- define "s3crypt.webdisName" -}}
{{- printf "%s-webdis" (include "s3crypt.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "s3crypt.webdisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "s3crypt.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webdis
{{- end -}}

{{- define "s3crypt.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "s3crypt.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "s3crypt.secretName" -}}
{{- default (include "s3crypt.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Redis mode: the webdis host Envoy connects to (bundled service or external address). */}}
{{- define "s3crypt.webdisAddress" -}}
{{- if .Values.stateStore.bundled.enabled -}}
{{- include "s3crypt.webdisName" . -}}
{{- else -}}
{{- required "stateStore.type=redis needs stateStore.webdis.address or stateStore.bundled.enabled=true" .Values.stateStore.webdis.address -}}
{{- end -}}
{{- end -}}

{{/* Checks that make a broken or unsafe deployment fail at render time. */}}
{{- define "s3crypt.validate" -}}
{{- $redis := eq .Values.stateStore.type "redis" -}}
{{- if not (has .Values.filter.conditionalWrites (list "refuse" "backend")) -}}
{{- fail "filter.conditionalWrites must be refuse or backend" -}}
{{- end -}}
{{- if not (has .Values.stateStore.type (list "shared_data" "redis")) -}}
{{- fail "stateStore.type must be shared_data or redis" -}}
{{- end -}}
{{- if and (not $redis) (or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled) -}}
{{- fail "more than one replica (replicaCount > 1 or autoscaling.enabled) needs stateStore.type=redis: multipart upload state must be shared between pods" -}}
{{- end -}}
{{- if and .Values.stateStore.bundled.enabled (not $redis) -}}
{{- fail "stateStore.bundled.enabled needs stateStore.type=redis" -}}
{{- end -}}
{{- if not (has .Values.module.source (list "file" "image")) -}}
{{- fail "module.source must be file or image" -}}
{{- end -}}
{{- if not (has .Values.module.build (list "wasm" "native")) -}}
{{- fail "module.build must be wasm or native" -}}
{{- end -}}
{{- if and (eq .Values.module.build "native") (eq .Values.image.repository "envoyproxy/envoy") -}}
{{- fail "module.build=native needs an Envoy image that contains the native module (native/Dockerfile, FROM envoyproxy/envoy:v1.40.0): set image.repository and image.tag to it" -}}
{{- end -}}
{{- if not .Values.secrets.existingSecret -}}
{{- if not .Values.secrets.keks -}}
{{- fail "set secrets.keks (key id -> base64 of 32 bytes) or secrets.existingSecret" -}}
{{- end -}}
{{- if not .Values.secrets.clientCredentials -}}
{{- fail "set secrets.clientCredentials or secrets.existingSecret" -}}
{{- end -}}
{{- if or (not .Values.secrets.backendAccessKeyId) (not .Values.secrets.backendSecretAccessKey) -}}
{{- fail "set secrets.backendAccessKeyId and secrets.backendSecretAccessKey or secrets.existingSecret" -}}
{{- end -}}
{{- if and .Values.stateStore.bundled.enabled (not .Values.secrets.redisAuth) -}}
{{- fail "the bundled webdis needs secrets.redisAuth (user:password)" -}}
{{- end -}}
{{- end -}}
{{- end -}}
