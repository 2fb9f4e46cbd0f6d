"""A minimal Django application for test_django.py: one plain model, one migration."""
