{{/* Name of the chart, or nameOverride. */}}
{{- define "prim.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of every resource name: "<release>-<chart>", or just the release when it contains the chart name. */}}
{{- define "prim.fullname" -}}
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

{{/* Name of one component's resources; call with (dict "root" $ "component" "auth"). */}}
{{- define "prim.componentName" -}}
{{- printf "%s-%s" (include "prim.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "prim.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every resource; call with (dict "root" $ "component" "auth"), component optional. */}}
{{- define "prim.labels" -}}
helm.sh/chart: {{ include "prim.chart" .root }}
{{ include "prim.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: prim
{{- end -}}

{{/* Labels that select one component's pods; call like prim.labels. */}}
{{- define "prim.selectorLabels" -}}
app.kubernetes.io/name: {{ include "prim.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{- define "prim.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "prim.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "prim.secretName" -}}
{{- default (include "prim.componentName" (dict "root" . "component" "secrets")) .Values.secret.existingSecret -}}
{{- end -}}

{{- define "prim.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
One setting value as a string. YAML numbers reach templates as float64,
and Go prints a whole float64 such as 1048576 as "1.048576e+06", so whole
numbers are printed as integers.
*/}}
{{- define "prim.settingValue" -}}
{{- if and (eq (kindOf .) "float64") (eq (floor .) .) -}}
{{- printf "%d" (int64 .) -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/* ConfigMap data as YAML from a dict of PRIM_* name to value; null values are left out. */}}
{{- define "prim.settingsData" -}}
{{- $data := dict -}}
{{- range $env, $value := . -}}
{{- if not (kindIs "invalid" $value) -}}
{{- $_ := set $data $env (include "prim.settingValue" $value) -}}
{{- end -}}
{{- end -}}
{{- toYaml $data -}}
{{- end -}}

{{/* In-cluster gRPC address of a component's Service; call with (dict "root" $ "component" "auth"). */}}
{{- define "prim.peerAddr" -}}
{{- $port := get (get .root.Values .component) "port" -}}
{{- printf "%s:%d" (include "prim.componentName" .) (int64 $port) -}}
{{- end -}}

{{/* PRIM_LISTEN / PRIM_HTTP_LISTEN value for a port. */}}
{{- define "prim.listen" -}}
{{- printf "%s:%d" .root.Values.listenHost (int64 .port) -}}
{{- end -}}

{{/* env entry that reads one key of the Secret; call with (dict "root" $ "key" "PRIM_X" "optional" false),
and "name" "PRIM_Y" for a variable named other than the key. */}}
{{- define "prim.secretEnv" -}}
- name: {{ .name | default .key }}
  valueFrom:
    secretKeyRef:
      name: {{ include "prim.secretName" .root }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end -}}

{{/*
Pod fields that every component shares; call with (dict "root" $ "component" "auth").
Rendered at the indentation of a pod spec.
*/}}
{{- define "prim.podCommon" -}}
{{- $values := get .root.Values .component -}}
serviceAccountName: {{ include "prim.serviceAccountName" .root }}
automountServiceAccountToken: false
# Service links would add <SERVICE>_PORT variables, and those of this release's
# Services start with PRIM_ like the services' own settings.
enableServiceLinks: false
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with $values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $values.spreadAcrossNodes }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "prim.selectorLabels" . | nindent 8 }}
{{- end }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: {{ .root.Values.tmpSizeLimit }}
{{- end -}}

{{/* Pod annotations: a checksum of the settings, so a changed ConfigMap rolls the pods. */}}
{{- define "prim.podAnnotations" -}}
{{- $values := get .root.Values .component -}}
checksum/config: {{ include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum }}
checksum/secret: {{ toJson .root.Values.secret | sha256sum }}
{{- if .root.Values.metrics.enabled }}
{{- $port := eq .component "edge" | ternary .root.Values.edge.httpPort .root.Values.metrics.port }}
prometheus.io/scrape: "true"
prometheus.io/path: /metrics
prometheus.io/port: {{ include "prim.settingValue" $port | quote }}
{{- end }}
{{- with $values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Deployment strategy: start a new pod before stopping an old one. */}}
{{- define "prim.strategy" -}}
strategy:
  type: RollingUpdate
  rollingUpdate:
    maxSurge: 25%
    maxUnavailable: 0
{{- end -}}
