"""`python -m services.ingest` runs the service."""

from services.ingest.app import main

main()
