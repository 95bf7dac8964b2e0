{{/*
The trigger of one worker: KEDA's postgresql scaler counting the job store's queued and
running jobs of the worker's type. Not RabbitMQ's queue length: a job running longer than
the ack hand-over (config.ack_handover_after_s) has its message acked, and would drop out of
that count while its pod is still busy (docs/autoscaling.md). The row stays `running` until
the job's final write, whatever its age, so busy pods stay part of the demand.
Call with (dict "root" $ "name" "ml" "worker" $worker).
*/}}
{{- define "conveyor.worker.trigger" -}}
- type: postgresql
  name: {{ .worker.queue | replace "." "-" }}
  metadata:
    query: {{ printf "SELECT count(*) FROM jobs WHERE type = '%s' AND state IN ('queued', 'running')" (include "conveyor.worker.jobType" .) | quote }}
    targetQueryValue: {{ include "conveyor.worker.jobsPerReplica" . | quote }}
    activationTargetQueryValue: {{ .worker.keda.activationValue | toString | quote }}
  authenticationRef:
    name: {{ include "conveyor.fullname" .root }}-job-store
{{- end }}
