"""The notifier: turns job.completed / job.failed into signed Standard Webhooks with durable retries."""
