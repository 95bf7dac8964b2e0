{{/*
Naming and labels. Every object carries the app.kubernetes.io/* set; selectors use
the stable subset (name, instance, component).
*/}}

{{- define "conveyor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "conveyor.fullname" -}}
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

{{- define "conveyor.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. Call with (dict "root" $ "component" "api"). */}}
{{- define "conveyor.labels" -}}
helm.sh/chart: {{ include "conveyor.chart" .root }}
{{ include "conveyor.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: conveyor
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels. Call with (dict "root" $ "component" "api"). */}}
{{- define "conveyor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "conveyor.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{- define "conveyor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "conveyor.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "conveyor.secretName" -}}
{{- default (printf "%s-secrets" (include "conveyor.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{- define "conveyor.configMapName" -}}
{{- printf "%s-config" (include "conveyor.fullname" .) }}
{{- end }}

{{/* Image reference. Call with (dict "root" $ "image" .Values.api.image). */}}
{{- define "conveyor.image" -}}
{{- $tag := default .root.Chart.AppVersion (default .root.Values.image.tag .image.tag) }}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/* The artifact store URL every component gets as CONVEYOR_ARTIFACT_URL. */}}
{{- define "conveyor.artifactUrl" -}}
{{- default .Values.artifacts.mountPath .Values.artifacts.url }}
{{- end }}

{{- define "conveyor.artifactsOnVolume" -}}
{{- if not .Values.artifacts.url }}true{{- end }}
{{- end }}

{{- define "conveyor.artifactsClaimName" -}}
{{- default (printf "%s-artifacts" (include "conveyor.fullname" .)) .Values.artifacts.persistence.existingClaim }}
{{- end }}

{{/* Pod-level security context shared by every pod. */}}
{{- define "conveyor.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{/* Container-level security context shared by every container. */}}
{{- define "conveyor.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{/*
Environment every Conveyor container gets: the two secret URLs by key (so the KEDA-only
key of the Secret never reaches a pod), HOME/TMPDIR on the writable emptyDir, the global
and per-component extraEnv. Call with (dict "root" $ "extraEnv" .component.extraEnv).
*/}}
{{- define "conveyor.secretEnv" -}}
- name: CONVEYOR_BROKER_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "conveyor.secretName" .root }}
      key: CONVEYOR_BROKER_URL
- name: CONVEYOR_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "conveyor.secretName" .root }}
      key: CONVEYOR_DATABASE_URL
{{- end }}

{{- define "conveyor.commonEnv" -}}
- name: HOME
  value: /tmp
- name: TMPDIR
  value: /tmp
{{- with .root.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- with .extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volumes: a writable /tmp and, for a local artifact store, the shared claim. */}}
{{- define "conveyor.volumes" -}}
- name: tmp
  emptyDir:
    {{- with .Values.tmpVolume.sizeLimit }}
    sizeLimit: {{ . }}
    {{- end }}
{{- if include "conveyor.artifactsOnVolume" . }}
- name: artifacts
  persistentVolumeClaim:
    claimName: {{ include "conveyor.artifactsClaimName" . }}
{{- end }}
{{- end }}

{{- define "conveyor.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if include "conveyor.artifactsOnVolume" . }}
- name: artifacts
  mountPath: {{ .Values.artifacts.mountPath }}
{{- end }}
{{- end }}

{{/*
Scheduling and pod metadata: a component's own value wins over the global one.
Call with (dict "root" $ "component" .Values.api).
*/}}
{{- define "conveyor.scheduling" -}}
{{- with (default .root.Values.nodeSelector .component.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default .root.Values.tolerations .component.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default .root.Values.affinity .component.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Pod annotations: config checksums, then the chart's own (.defaults), then the global and the
component's podAnnotations, merged so that a user's key replaces the chart's, never repeats it.
Call with (dict "root" $ "component" .Values.api "defaults" (dict ...)).
*/}}
{{- define "conveyor.podAnnotations" -}}
{{- $annotations := dict
  "checksum/config" (include (print .root.Template.BasePath "/config/configmap.yaml") .root | sha256sum)
  "checksum/secret" (include (print .root.Template.BasePath "/config/secret.yaml") .root | sha256sum) }}
{{- $annotations = mergeOverwrite $annotations (.defaults | default dict) (.root.Values.podAnnotations | default dict) (.component.podAnnotations | default dict) }}
{{- toYaml $annotations }}
{{- end }}

{{/* Worker derived values. Call with (dict "root" $ "name" "ml" "worker" $worker). */}}
{{- define "conveyor.worker.fullname" -}}
{{- printf "%s-worker-%s" (include "conveyor.fullname" .root) .name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "conveyor.worker.gracePeriod" -}}
{{- if kindIs "invalid" .worker.terminationGracePeriodSeconds }}
{{- add (int .worker.timeLimitSeconds) 60 }}
{{- else }}
{{- int .worker.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{- /* The job type a worker runs: its queue is "conveyor." + the type (JobType.queue). */}}
{{- define "conveyor.worker.jobType" -}}
{{- trimPrefix "conveyor." .worker.queue }}
{{- end }}

{{- define "conveyor.worker.jobsPerReplica" -}}
{{- if kindIs "invalid" .worker.keda.jobsPerReplica }}
{{- int .worker.concurrency }}
{{- else }}
{{- int .worker.keda.jobsPerReplica }}
{{- end }}
{{- end }}

{{- define "conveyor.worker.scaledJob" -}}
{{- if and .worker.keda.enabled (eq .worker.keda.kind "ScaledJob") }}true{{- end }}
{{- end }}

{{/*
A Kubernetes quantity ("2304Mi", "2.5Gi", "3G", "500m", 4) as a number of base units
(bytes, cores), a float. Helm has no parser of its own; this one fails on what it cannot read.
*/}}
{{- define "conveyor.quantity" -}}
{{- $q := toString . | trim }}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $q }}
{{- $suffix := trimPrefix $number $q }}
{{- $units := dict "" 1.0 "m" 0.001 "k" 1000.0 "M" 1000000.0 "G" 1000000000.0 "T" 1000000000000.0 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 }}
{{- if or (not $number) (not (hasKey $units $suffix)) }}
{{- fail (printf "cannot read the Kubernetes quantity %q: write a number with an optional suffix (m, k, M, G, T, Ki, Mi, Gi, Ti), e.g. 2304Mi or 500m." $q) }}
{{- end }}
{{- mulf (float64 $number) (get $units $suffix) }}
{{- end }}

{{/*
A setting the chart checks against other values: config.<key>, else the application's
default (conveyor_core.settings.Settings; tests/deploy pins each one to it).
Call with (dict "root" $ "key" "max_upload_bytes").
*/}}
{{- define "conveyor.setting" -}}
{{- $defaults := dict "max_upload_bytes" 268435456 "cmd_max_memory_bytes" 536870912 "cmd_max_timeout_s" 3600 }}
{{- $value := index .root.Values.config .key }}
{{- if kindIs "invalid" $value }}{{ $value = get $defaults .key }}{{ end }}
{{- int64 $value }}
{{- end }}

{{/*
Threads of the numeric libraries (BLAS/OpenMP, Polars) per pool process: workers.<name>.threads,
else the container's CPU limit (its request without one) shared by the pool processes,
rounded up, at least 1. Unset, they start one thread per node core, in every process.
*/}}
{{- define "conveyor.worker.threads" -}}
{{- $w := .worker }}
{{- if not (kindIs "invalid" $w.threads) }}
{{- int $w.threads }}
{{- else }}
{{- $cpu := dig "limits" "cpu" (dig "requests" "cpu" "1" ($w.resources | default dict)) ($w.resources | default dict) }}
{{- $cores := include "conveyor.quantity" $cpu | float64 }}
{{- max 1 (ceil (divf $cores (int $w.concurrency)) | int) }}
{{- end }}
{{- end }}

{{/*
Every worker, by short name: one per job type of the registry (files/job-types.json,
written by deploy/generate.py from conveyor_core.jobs), starting from workerDefaults, with the
type's queue and time limits, then workers.<name> over them. A fourth job type therefore
needs no values at all. Worked out once per render and kept on the root context (not
passed through JSON, which would turn every number into a float):
  {{- include "conveyor.workers" $ }}{{- range $name, $w := $.conveyorWorkers }}
*/}}
{{- define "conveyor.workers" -}}
{{- if not (hasKey . "conveyorWorkers") }}
{{- $declared := .Files.Get "files/job-types.json" | fromJson }}
{{- range $name, $_ := .Values.workers }}
{{- if not (hasKey $declared $name) }}
{{- fail (printf "workers.%s: no job type has a worker named %q; the registry's workers are %s." $name $name (keys $declared | sortAlpha | join ", ")) }}
{{- end }}
{{- end }}
{{- $workers := dict }}
{{- range $name, $type := $declared }}
{{- $w := deepCopy $.Values.workerDefaults }}
{{- $_ := set $w "queue" $type.queue }}
{{- $_ := set $w "softTimeLimitSeconds" (int $type.softTimeLimitSeconds) }}
{{- $_ := set $w "timeLimitSeconds" (int $type.timeLimitSeconds) }}
{{- include "conveyor.mergeInto" (dict "into" $w "from" (index $.Values.workers $name | default dict)) }}
{{- if ne $w.queue $type.queue }}
{{- fail (printf "workers.%s.queue (%s) must be the job type's queue, %s: leave it unset." $name $w.queue $type.queue) }}
{{- end }}
{{- if not $w.image.repository }}
{{- $_ := set $w.image "repository" (printf "conveyor/worker-%s" $name) }}
{{- end }}
{{- $_ := set $workers $name $w }}
{{- end }}
{{- $_ := set . "conveyorWorkers" $workers }}
{{- end }}
{{- end }}

{{/*
Deep merge of .from into .into, in place. Unlike sprig's merge and mergeOverwrite, a false,
0 or "" in .from wins (they treat those as unset), and an empty map replaces (a probe set
to {} is disabled, not merged away).
*/}}
{{- define "conveyor.mergeInto" -}}
{{- $into := .into }}
{{- range $key, $value := .from }}
{{- if and (kindIs "map" $value) $value (kindIs "map" (index $into $key)) }}
{{- include "conveyor.mergeInto" (dict "into" (index $into $key) "from" $value) }}
{{- else }}
{{- $_ := set $into $key $value }}
{{- end }}
{{- end }}
{{- end }}
