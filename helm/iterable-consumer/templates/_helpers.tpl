{{- define "ic.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ic.fullname" -}}
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

{{- define "ic.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ic.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ic.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "ic.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "ic.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ic.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ic.apiKeySecret" -}}
{{- if .Values.iterable.apiKey.existingSecret -}}
{{- .Values.iterable.apiKey.existingSecret -}}
{{- else -}}
{{- printf "%s-iterable" (include "ic.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "ic.apiKeySecretKey" -}}
{{- if .Values.iterable.apiKey.existingSecret -}}
{{- .Values.iterable.apiKey.existingSecretKey -}}
{{- else -}}
api-key
{{- end -}}
{{- end -}}

{{/* Render-time checks the schema cannot express. */}}
{{- define "ic.validate" -}}
{{- if not .Values.kafka.bootstrapServers -}}
{{- fail "kafka.bootstrapServers is required" -}}
{{- end -}}
{{- if and (not .Values.iterable.apiKey.existingSecret) (not .Values.iterable.apiKey.value) -}}
{{- fail "set iterable.apiKey.existingSecret (preferred) or iterable.apiKey.value" -}}
{{- end -}}
{{- if le (int .Values.terminationGracePeriodSeconds) (int .Values.consumer.shutdownGraceSeconds) -}}
{{- fail "terminationGracePeriodSeconds must exceed consumer.shutdownGraceSeconds" -}}
{{- end -}}
{{- if and (eq .Values.autoscaling.mode "keda") (gt (int .Values.autoscaling.keda.maxReplicaCount) (int .Values.autoscaling.keda.partitionCount)) -}}
{{- fail "autoscaling.keda.maxReplicaCount must not exceed autoscaling.keda.partitionCount" -}}
{{- end -}}
{{- if and .Values.serviceMonitor.enabled (not .Values.service.enabled) -}}
{{- fail "serviceMonitor.enabled needs service.enabled" -}}
{{- end -}}
{{- range $property, $value := .Values.kafka.config -}}
{{- if regexMatch "(?i)(password|secret|jaas|key\\.pem|token)" $property -}}
{{- fail (printf "kafka.config.%s looks secret: put it in kafka.secretConfig" $property) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The environment contract of SPEC §7, from values. */}}
{{- define "ic.env" -}}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrapServers | quote }}
- name: KAFKA_GROUP_ID
  value: {{ .Values.kafka.groupId | quote }}
- name: KAFKA_GROUP_PROTOCOL
  value: {{ .Values.kafka.groupProtocol | quote }}
- name: TOPIC_USER_CHANGED
  value: {{ .Values.kafka.topics.userChanged | quote }}
- name: TOPIC_DEVICE_REGISTERED
  value: {{ .Values.kafka.topics.deviceRegistered | quote }}
- name: TOPIC_PUSH_REVOKED
  value: {{ .Values.kafka.topics.pushRevoked | quote }}
{{- range $property, $value := .Values.kafka.config }}
- name: {{ printf "KAFKA_CONFIG_%s" ($property | upper | replace "." "_" | replace "-" "_") }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- range .Values.kafka.secretConfig }}
- name: {{ printf "KAFKA_CONFIG_%s" (.property | upper | replace "." "_" | replace "-" "_") }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName | quote }}
      key: {{ .secretKey | quote }}
{{- end }}
- name: ITERABLE_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "ic.apiKeySecret" . | quote }}
      key: {{ include "ic.apiKeySecretKey" . | quote }}
- name: ITERABLE_REGION
  value: {{ .Values.iterable.region | quote }}
{{- with .Values.iterable.baseUrl }}
- name: ITERABLE_BASE_URL
  value: {{ . | quote }}
{{- end }}
- name: ITERABLE_PROJECT_TYPE
  value: {{ .Values.iterable.projectType | quote }}
- name: ITERABLE_PREFER_USER_ID
  value: {{ .Values.iterable.preferUserId | quote }}
- name: ITERABLE_DEVICE_TOKEN_OWNERSHIP
  value: {{ .Values.iterable.deviceTokenOwnership | quote }}
- name: ITERABLE_USER_UPDATE_MODE
  value: {{ .Values.iterable.userUpdateMode | quote }}
- name: ITERABLE_BULK_MAX_USERS
  value: {{ .Values.iterable.bulkMaxUsers | quote }}
- name: ITERABLE_BULK_LINGER_SECONDS
  value: {{ .Values.iterable.bulkLingerSeconds | quote }}
{{- with .Values.iterable.rateLimits }}
- name: ITERABLE_RATE_LIMITS
  value: {{ . | quote }}
{{- end }}
{{- if gt (int .Values.iterable.maxAttempts) 0 }}
- name: ITERABLE_MAX_ATTEMPTS
  value: {{ .Values.iterable.maxAttempts | quote }}
{{- end }}
- name: METRICS_PORT
  value: {{ .Values.metricsPort | quote }}
- name: LOG_LEVEL
  value: {{ .Values.logging.level | quote }}
- name: LOG_FORMAT
  value: {{ .Values.logging.format | quote }}
- name: CONSUMER_MAX_IN_FLIGHT
  value: {{ .Values.consumer.maxInFlight | quote }}
- name: CONSUMER_MAX_BUFFERED
  value: {{ .Values.consumer.maxBuffered | quote }}
- name: CONSUMER_MAX_BUFFERED_PER_PARTITION
  value: {{ .Values.consumer.maxBufferedPerPartition | quote }}
- name: CONSUMER_MAX_EVENT_BYTES
  value: {{ .Values.consumer.maxEventBytes | int | quote }}
- name: CONSUMER_COMMIT_INTERVAL_SECONDS
  value: {{ .Values.consumer.commitIntervalSeconds | quote }}
- name: CONSUMER_REVOKE_DRAIN_SECONDS
  value: {{ .Values.consumer.revokeDrainSeconds | quote }}
- name: CONSUMER_SHUTDOWN_GRACE_SECONDS
  value: {{ .Values.consumer.shutdownGraceSeconds | quote }}
- name: CONSUMER_LIVENESS_TIMEOUT_SECONDS
  value: {{ .Values.consumer.livenessTimeoutSeconds | quote }}
- name: CONSUMER_CREDENTIALS_PROBE_SECONDS
  value: {{ .Values.consumer.credentialsProbeSeconds | quote }}
- name: CONSUMER_DEDUP_WINDOW
  value: {{ .Values.consumer.dedupWindow | int | quote }}
- name: CONSUMER_DEVICE_GUARD_SIZE
  value: {{ .Values.consumer.deviceGuardSize | int | quote }}
- name: CONSUMER_DEVICE_LOOKBACK_RECORDS
  value: {{ .Values.consumer.deviceLookbackRecords | int | quote }}
- name: DLQ_TOPIC_SUFFIX
  value: {{ .Values.deadLetters.topicSuffix | quote }}
- name: DLQ_BREAKER_RATIO
  value: {{ .Values.deadLetters.breaker.ratio | quote }}
- name: DLQ_BREAKER_WINDOW_SECONDS
  value: {{ .Values.deadLetters.breaker.windowSeconds | quote }}
- name: DLQ_BREAKER_MIN_EVENTS
  value: {{ .Values.deadLetters.breaker.minEvents | quote }}
- name: DLQ_BREAKER_COOLDOWN_SECONDS
  value: {{ .Values.deadLetters.breaker.cooldownSeconds | quote }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}
