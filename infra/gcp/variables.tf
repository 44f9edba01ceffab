variable "project" {
  description = "The Google Cloud project to deploy into."
  type        = string
}

variable "region" {
  description = "Region of the Cloud Run service, the Cloud Tasks queue and the bucket."
  type        = string
  default     = "us-central1"
}

variable "firestore_location" {
  description = "Location of the Firestore database (a region or a multi-region such as nam5)."
  type        = string
  default     = "nam5"
}

variable "service_name" {
  description = "Name of the Cloud Run service (also the prefix of the other resources)."
  type        = string
  default     = "worldflow"
}

variable "image" {
  description = "The container image built from infra/gcp/Dockerfile (worldflow package gcp prints how)."
  type        = string
}

variable "modules" {
  description = "WORLDFLOW_MODULES: comma-separated modules the service imports to find workflows."
  type        = string
}

variable "bucket_name" {
  description = "Cloud Storage bucket for payloads past Firestore's 1 MiB limit (globally unique)."
  type        = string
}

variable "max_instances" {
  description = "Upper bound on Cloud Run instances."
  type        = number
  default     = 10
}

variable "kms_key" {
  description = "Optional Cloud KMS key (projects/.../cryptoKeys/...) for the bucket; Google-managed keys when empty."
  type        = string
  default     = ""
}

variable "max_deliveries" {
  description = "WORLDFLOW_MAX_DELIVERIES: failed deliveries of one message before the engine keeps it as a dead letter (worldflow dlq list|redrive)."
  type        = number
  default     = 16
  validation {
    condition     = var.max_deliveries >= 1 && var.max_deliveries <= 1000 && floor(var.max_deliveries) == var.max_deliveries
    error_message = "max_deliveries must be a whole number from 1 to 1000."
  }
}

variable "task_max_attempts" {
  description = "The queue's max_attempts: a backstop above max_deliveries for tasks the engine never sees (answered 5xx before it)."
  type        = number
  default     = 100
}

variable "request_timeout" {
  description = "Cloud Run's request timeout in seconds: the longest one step attempt may run (15 to 1800: Cloud Tasks waits at most 30 minutes for a task's answer)."
  type        = number
  default     = 600
  validation {
    condition     = var.request_timeout >= 15 && var.request_timeout <= 1800 && floor(var.request_timeout) == var.request_timeout
    error_message = "request_timeout must be a whole number of seconds from 15 to 1800."
  }
}

variable "concurrency" {
  description = "Requests one Cloud Run instance takes at once (task requests wait on their runs' steps, so mostly idle)."
  type        = number
  default     = 80
}

variable "run_ttl_days" {
  description = "Days a finished run's documents (run, events) are kept before Firestore's TTL deletes them (WORLDFLOW_GCP_RUN_TTL); 0 keeps them."
  type        = number
  default     = 0
  validation {
    condition     = var.run_ttl_days >= 0 && floor(var.run_ttl_days) == var.run_ttl_days
    error_message = "run_ttl_days must be a whole number of days, 0 to keep runs."
  }
}

variable "blob_retention_days" {
  description = "Days a big payload (runs/, messages/ in the bucket) is kept. Longer than your longest run plus run_ttl_days: a running run still reads its blobs."
  type        = number
  default     = 400
  validation {
    condition     = var.blob_retention_days >= 1
    error_message = "blob_retention_days must be at least 1."
  }
}
