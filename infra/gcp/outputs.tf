output "service_url" {
  description = "The Cloud Run service's URL: webhooks are under /webhooks/."
  value       = google_cloud_run_v2_service.service.uri
}

output "queue" {
  description = "The Cloud Tasks queue's full name."
  value       = google_cloud_tasks_queue.tasks.id
}

output "bucket" {
  description = "The bucket holding payloads past Firestore's document limit."
  value       = google_storage_bucket.payloads.name
}

output "env" {
  description = "What a process outside Cloud Run (a script, the CLI) exports to use this world."
  value = {
    WORLDFLOW_WORLD           = "gcp"
    WORLDFLOW_GCP_PROJECT     = var.project
    WORLDFLOW_GCP_LOCATION    = google_cloud_tasks_queue.tasks.location
    WORLDFLOW_GCP_QUEUE       = google_cloud_tasks_queue.tasks.name
    WORLDFLOW_GCP_BUCKET      = google_storage_bucket.payloads.name
    WORLDFLOW_GCP_SERVICE_URL = local.service_url
    WORLDFLOW_PUBLIC_URL      = local.service_url
    # Tasks a client queues (a run's start) carry OIDC tokens of this account: the
    # caller needs roles/iam.serviceAccountUser on it and roles/cloudtasks.enqueuer.
    WORLDFLOW_GCP_OIDC_AUDIENCE         = local.service_url
    WORLDFLOW_GCP_TASKS_SERVICE_ACCOUNT = google_service_account.tasks.email
  }
}
