{{/* The Secret the migration hook reads: hooks run before the release's own Secret exists. */}}
{{- define "conveyor.migrations.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- printf "%s-migrations" (include "conveyor.fullname" .) }}
{{- end }}
{{- end }}

{{- define "conveyor.migrations.serviceAccountName" -}}
{{- if .Values.migrations.serviceAccountName }}
{{- .Values.migrations.serviceAccountName }}
{{- else if not .Values.serviceAccount.create }}
{{- include "conveyor.serviceAccountName" . }}
{{- else }}
{{- "default" }}
{{- end }}
{{- end }}
