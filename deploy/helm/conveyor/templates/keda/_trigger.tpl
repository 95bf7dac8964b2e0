{{/*
The RabbitMQ trigger of one worker. HTTP protocol (the management API) so that
unacknowledged messages, the jobs running right now, count towards the queue length:
a pod busy with a long job is part of the demand and is not scaled in.
Call with (dict "root" $ "name" "ml" "worker" $worker).
*/}}
{{- define "conveyor.worker.trigger" -}}
- type: rabbitmq
  name: {{ .worker.queue | replace "." "-" }}
  metadata:
    protocol: http
    mode: QueueLength
    queueName: {{ .worker.queue | quote }}
    value: {{ include "conveyor.worker.jobsPerReplica" . | quote }}
    activationValue: {{ .worker.keda.activationValue | toString | quote }}
    excludeUnacknowledged: "false"
  authenticationRef:
    name: {{ include "conveyor.fullname" .root }}-rabbitmq
{{- end }}
