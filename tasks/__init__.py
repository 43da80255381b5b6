"""Thin Celery task functions: decode the message, call the real logic, record the outcome."""
