"""The notifier: turns job.completed / job.failed / job.cancelled into signed Standard Webhooks with durable retries."""
