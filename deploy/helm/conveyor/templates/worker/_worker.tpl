{{/*
The pod template of one worker, shared by its Deployment and, in ScaledJob mode, by the
Job KEDA creates per message. Call with (dict "root" $ "name" "ml" "worker" $worker).
*/}}
{{- define "conveyor.worker.podTemplate" -}}
{{- $root := .root }}
{{- $w := .worker }}
{{- $component := printf "worker-%s" .name }}
{{- $scaledJob := include "conveyor.worker.scaledJob" . }}
{{- $annotations := dict }}
{{- if not $w.safeToEvict }}
{{- /* A node scale-down would evict a running job, which then starts over elsewhere. */}}
{{- $_ := set $annotations "cluster-autoscaler.kubernetes.io/safe-to-evict" "false" }}
{{- $_ := set $annotations "karpenter.sh/do-not-disrupt" "true" }}
{{- end }}
{{- $threads := include "conveyor.worker.threads" . -}}
metadata:
  labels:
    {{- include "conveyor.labels" (dict "root" $root "component" $component) | nindent 4 }}
    conveyor.io/role: worker
    {{- with $root.Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    {{- include "conveyor.podAnnotations" (dict "root" $root "component" $w "defaults" $annotations) | nindent 4 }}
spec:
  serviceAccountName: {{ include "conveyor.serviceAccountName" $root }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  {{- if $scaledJob }}
  restartPolicy: Never
  {{- end }}
  securityContext:
    {{- include "conveyor.podSecurityContext" $root | nindent 4 }}
  # Celery's warm shutdown on SIGTERM lets the running job finish; this is the longest a
  # job may run (its hard time limit) plus a margin. No preStop: no Service routes to workers.
  terminationGracePeriodSeconds: {{ include "conveyor.worker.gracePeriod" . }}
  {{- include "conveyor.scheduling" (dict "root" $root "component" $w) | nindent 2 }}
  containers:
    - name: worker
      image: {{ include "conveyor.image" (dict "root" $root "image" $w.image) }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      ports:
        - name: metrics
          containerPort: {{ $w.metricsPort }}
          protocol: TCP
      envFrom:
        - configMapRef:
            name: {{ include "conveyor.configMapName" $root }}
      env:
        {{- include "conveyor.secretEnv" (dict "root" $root) | nindent 8 }}
        - name: CONVEYOR_WORKER_CONCURRENCY
          value: {{ $w.concurrency | quote }}
        - name: CONVEYOR_SOFT_TIME_LIMIT_S
          value: {{ int $w.softTimeLimitSeconds | quote }}
        - name: CONVEYOR_TIME_LIMIT_S
          value: {{ int $w.timeLimitSeconds | quote }}
        # /healthz and /metrics must answer on the pod IP (kubelet probes, Prometheus).
        - name: CONVEYOR_METRICS_HOST
          value: "0.0.0.0"
        - name: CONVEYOR_METRICS_PORT
          value: {{ $w.metricsPort | quote }}
        # Numeric libraries otherwise start a thread per node core in every pool process.
        {{- range list "OMP_NUM_THREADS" "OPENBLAS_NUM_THREADS" "MKL_NUM_THREADS" "POLARS_MAX_THREADS" }}
        - name: {{ . }}
          value: {{ $threads | quote }}
        {{- end }}
        {{- if $scaledJob }}
        # One job per pod: the worker exits after its first job and the Job completes.
        - name: CONVEYOR_WORKER_MAX_JOBS
          value: "1"
        # ...or after finding none: another pod may have taken the message it was started for.
        - name: CONVEYOR_WORKER_IDLE_EXIT_S
          value: {{ $w.keda.scaledJob.idleExitSeconds | quote }}
        {{- end }}
        {{- include "conveyor.commonEnv" (dict "root" $root "extraEnv" $w.extraEnv) | nindent 8 }}
      {{- with $w.startupProbe }}
      startupProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $w.livenessProbe }}
      livenessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $w.readinessProbe }}
      readinessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      resources:
        {{- toYaml $w.resources | nindent 8 }}
      securityContext:
        {{- include "conveyor.containerSecurityContext" $root | nindent 8 }}
      volumeMounts:
        {{- include "conveyor.volumeMounts" $root | nindent 8 }}
  volumes:
    {{- include "conveyor.volumes" $root | nindent 4 }}
{{- end }}
