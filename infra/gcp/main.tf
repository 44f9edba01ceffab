# The GCP world, deployed: a Cloud Run service (the ASGI app), a Cloud Tasks
# queue that targets it, Firestore (database + the indexes list_runs needs),
# a bucket for big payloads, and two service accounts with least privilege:
#
#   worldflow-run   the service's identity: reads/writes Firestore, enqueues
#                   tasks on this queue only, reads/writes objects in this bucket
#                   only, and may mint OIDC tokens as worldflow-tasks;
#   worldflow-tasks the identity Cloud Tasks signs its OIDC tokens as: it may
#                   only invoke this service.
#
# The service allows unauthenticated requests at the Cloud Run level because
# webhooks are called by outside services; the internal task route checks
# every request's OIDC token itself (audience = the service URL, issued to
# worldflow-tasks), and refuses all calls when none is configured.

terraform {
  required_version = ">= 1.5"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 5.30"
    }
  }
}

provider "google" {
  project = var.project
  region  = var.region
}

data "google_project" "this" {
  project_id = var.project
}

locals {
  # Cloud Run's deterministic URL, known before the service exists (tasks and
  # the OIDC audience need it in the service's own environment).
  service_url = "https://${var.service_name}-${data.google_project.this.number}.${var.region}.run.app"
  apis = [
    "run.googleapis.com",
    "cloudtasks.googleapis.com",
    "firestore.googleapis.com",
    "storage.googleapis.com",
    "iam.googleapis.com",
  ]
}

resource "google_project_service" "apis" {
  for_each           = toset(local.apis)
  project            = var.project
  service            = each.value
  disable_on_destroy = false
}

# -- Firestore ------------------------------------------------------------------
resource "google_firestore_database" "default" {
  project                 = var.project
  name                    = "(default)"
  location_id             = var.firestore_location
  type                    = "FIRESTORE_NATIVE"
  concurrency_mode        = "OPTIMISTIC"
  delete_protection_state = "DELETE_PROTECTION_ENABLED"
  depends_on              = [google_project_service.apis]
}

# The composite indexes of infra/gcp/firestore.indexes.json (run listing, retention).
resource "google_firestore_index" "runs_by_status" {
  project    = var.project
  database   = google_firestore_database.default.name
  collection = "runs"
  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
}

resource "google_firestore_index" "runs_by_workflow" {
  project    = var.project
  database   = google_firestore_database.default.name
  collection = "runs"
  fields {
    field_path = "workflow"
    order      = "ASCENDING"
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
}

resource "google_firestore_index" "runs_by_status_and_workflow" {
  project    = var.project
  database   = google_firestore_database.default.name
  collection = "runs"
  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "workflow"
    order      = "ASCENDING"
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
}

# Retention (WORLDFLOW_RETENTION): runs that ended (status in ...) before a time.
resource "google_firestore_index" "runs_by_status_and_end" {
  project    = var.project
  database   = google_firestore_database.default.name
  collection = "runs"
  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "updated_at"
    order      = "ASCENDING"
  }
}

# list_runs(tags=): runs whose tag_list holds "key=value", newest first.
resource "google_firestore_index" "runs_by_tag" {
  project    = var.project
  database   = google_firestore_database.default.name
  collection = "runs"
  fields {
    field_path   = "tag_list"
    array_config = "CONTAINS"
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
}

# Large text fields are never queried: no single-field index to write.
resource "google_firestore_field" "events_log" {
  project    = var.project
  database   = google_firestore_database.default.name
  collection = "events"
  field      = "log"
  index_config {}
}

# An append's outbox (JSON text of its messages, until they are sent): never queried.
resource "google_firestore_field" "events_out" {
  project    = var.project
  database   = google_firestore_database.default.name
  collection = "events"
  field      = "out"
  index_config {}
}

# Retention: when a run ends the world writes expire_at (its end + run_ttl_days) on
# its run document, on each of its events documents and on its streams' documents
# (heads and chunks); these TTL policies have
# Firestore delete them after that time (within about a day of it, says Google).
# No index on the field: a timestamp written in order would be a write hot spot.
resource "google_firestore_field" "runs_expire_at" {
  project    = var.project
  database   = google_firestore_database.default.name
  collection = "runs"
  field      = "expire_at"
  index_config {}
  ttl_config {}
}

resource "google_firestore_field" "events_expire_at" {
  project    = var.project
  database   = google_firestore_database.default.name
  collection = "events"
  field      = "expire_at"
  index_config {}
  ttl_config {}
}

resource "google_firestore_field" "streams_expire_at" {
  project    = var.project
  database   = google_firestore_database.default.name
  collection = "streams"
  field      = "expire_at"
  index_config {}
  ttl_config {}
}

resource "google_firestore_field" "chunks_expire_at" {
  project    = var.project
  database   = google_firestore_database.default.name
  collection = "chunks"
  field      = "expire_at"
  index_config {}
  ttl_config {}
}

# Dead letters (worldflow dlq list|redrive) are listed by "at" only.
resource "google_firestore_field" "dead_letters_body" {
  project    = var.project
  database   = google_firestore_database.default.name
  collection = "dead_letters"
  field      = "body"
  index_config {}
}

resource "google_firestore_field" "dead_letters_reason" {
  project    = var.project
  database   = google_firestore_database.default.name
  collection = "dead_letters"
  field      = "reason"
  index_config {}
}

resource "google_firestore_field" "runs_output" {
  project    = var.project
  database   = google_firestore_database.default.name
  collection = "runs"
  field      = "output"
  index_config {}
}

resource "google_firestore_field" "runs_error" {
  project    = var.project
  database   = google_firestore_database.default.name
  collection = "runs"
  field      = "error"
  index_config {}
}

# -- Cloud Storage ----------------------------------------------------------------
resource "google_storage_bucket" "payloads" {
  # Access to objects is audited by Cloud Audit Logs (Data Access logs for
  # storage.googleapis.com), not by the legacy usage-log bucket this check wants.
  #checkov:skip=CKV_GCP_62:Cloud Audit Logs record access; no second log bucket
  name                        = var.bucket_name
  project                     = var.project
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  # Blobs are written once, under names no other writer uses: versions would only
  # keep deleted payloads. Age-based deletion is the retention (blob_retention_days).
  #checkov:skip=CKV_GCP_78:write-once objects under unique names; versions would keep deleted payloads
  versioning {
    enabled = false
  }
  lifecycle_rule {
    condition {
      age            = var.blob_retention_days
      matches_prefix = ["runs/", "messages/"]
    }
    action {
      type = "Delete"
    }
  }
  # Should versioning be switched on by hand: a replaced or deleted version goes after a day.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 1
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }
  dynamic "encryption" {
    for_each = var.kms_key == "" ? [] : [var.kms_key]
    content {
      default_kms_key_name = encryption.value
    }
  }
  depends_on = [google_project_service.apis]
}

# -- service accounts ----------------------------------------------------------------
resource "google_service_account" "run" {
  project      = var.project
  account_id   = "${var.service_name}-run"
  display_name = "worldflow Cloud Run service"
}

resource "google_service_account" "tasks" {
  project      = var.project
  account_id   = "${var.service_name}-tasks"
  display_name = "worldflow Cloud Tasks invoker (OIDC tokens)"
}

resource "google_project_iam_member" "run_firestore" {
  project = var.project
  role    = "roles/datastore.user"
  member  = "serviceAccount:${google_service_account.run.email}"
}

resource "google_storage_bucket_iam_member" "run_objects" {
  bucket = google_storage_bucket.payloads.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.run.email}"
}

resource "google_cloud_tasks_queue_iam_member" "run_enqueue" {
  project  = var.project
  location = google_cloud_tasks_queue.tasks.location
  name     = google_cloud_tasks_queue.tasks.name
  role     = "roles/cloudtasks.enqueuer"
  member   = "serviceAccount:${google_service_account.run.email}"
}

# Creating a task with an OIDC token as worldflow-tasks needs actAs on it.
resource "google_service_account_iam_member" "run_acts_as_tasks" {
  service_account_id = google_service_account.tasks.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.run.email}"
}

resource "google_cloud_run_v2_service_iam_member" "tasks_invoke" {
  project  = var.project
  location = google_cloud_run_v2_service.service.location
  name     = google_cloud_run_v2_service.service.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.tasks.email}"
}

# Webhooks are called by outside services, without Google credentials.
resource "google_cloud_run_v2_service_iam_member" "public_webhooks" {
  project  = var.project
  location = google_cloud_run_v2_service.service.location
  name     = google_cloud_run_v2_service.service.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# -- Cloud Tasks ------------------------------------------------------------------
resource "google_cloud_tasks_queue" "tasks" {
  project  = var.project
  name     = var.service_name
  location = var.region
  # The engine gives up on a message after var.max_deliveries failed deliveries (it
  # keeps it in Firestore's dead_letters, answers 200, and Cloud Tasks forgets the
  # task). This bound is a backstop for tasks the engine never sees: answered 5xx by
  # a service that cannot take them (stopping, failing before the engine). Retries
  # wait 1 s, doubling 8 times (to 256 s), then 300 s: 100 attempts take ~7.6 hours.
  # A task is dropped once it has had max_attempts AND max_retry_duration has passed.
  retry_config {
    max_attempts       = var.task_max_attempts
    max_retry_duration = "3600s"
    min_backoff        = "1s"
    max_backoff        = "300s"
    max_doublings      = 8
  }
  rate_limits {
    max_dispatches_per_second = 500
    max_concurrent_dispatches = 1000
  }
  stackdriver_logging_config {
    sampling_ratio = 1.0
  }
  lifecycle {
    precondition {
      condition     = var.task_max_attempts > var.max_deliveries
      error_message = "task_max_attempts must be above max_deliveries: the engine, not Cloud Tasks, decides when a message is a dead letter."
    }
  }
  depends_on = [google_project_service.apis]
}

# -- Cloud Run ---------------------------------------------------------------------
resource "google_cloud_run_v2_service" "service" {
  project             = var.project
  name                = var.service_name
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_ALL"
  deletion_protection = false

  template {
    service_account                  = google_service_account.run.email
    # A task's request lasts while its run's steps run: the longest step attempt. The
    # service gets the same value (WORLDFLOW_GCP_REQUEST_TIMEOUT): its tasks' dispatch
    # deadline, and the route answers a minute before it.
    timeout                          = "${var.request_timeout}s"
    max_instance_request_concurrency = var.concurrency
    scaling {
      max_instance_count = var.max_instances
    }
    containers {
      image = var.image
      resources {
        limits = {
          cpu    = "1"
          memory = "512Mi"
        }
        cpu_idle = false # steps run inside requests; timers and heartbeats between them
      }
      env {
        name  = "WORLDFLOW_WORLD"
        value = "gcp"
      }
      env {
        name  = "WORLDFLOW_MODULES"
        value = var.modules
      }
      env {
        name  = "WORLDFLOW_GCP_REQUEST_TIMEOUT"
        value = tostring(var.request_timeout)
      }
      env {
        name  = "WORLDFLOW_GCP_RUN_TTL"
        value = var.run_ttl_days == 0 ? "off" : "${var.run_ttl_days}d"
      }
      env {
        name  = "WORLDFLOW_MAX_DELIVERIES"
        value = tostring(var.max_deliveries)
      }
      env {
        name  = "WORLDFLOW_GCP_PROJECT"
        value = var.project
      }
      env {
        name  = "WORLDFLOW_GCP_LOCATION"
        value = google_cloud_tasks_queue.tasks.location
      }
      env {
        name  = "WORLDFLOW_GCP_QUEUE"
        value = google_cloud_tasks_queue.tasks.name
      }
      env {
        name  = "WORLDFLOW_GCP_BUCKET"
        value = google_storage_bucket.payloads.name
      }
      env {
        name  = "WORLDFLOW_GCP_SERVICE_URL"
        value = local.service_url
      }
      env {
        name  = "WORLDFLOW_PUBLIC_URL"
        value = local.service_url
      }
      env {
        name  = "WORLDFLOW_GCP_OIDC_AUDIENCE"
        value = local.service_url
      }
      env {
        name  = "WORLDFLOW_GCP_TASKS_SERVICE_ACCOUNT"
        value = google_service_account.tasks.email
      }
      startup_probe {
        http_get {
          path = "/healthz"
        }
      }
    }
  }
  depends_on = [google_project_service.apis, google_firestore_database.default]
}
