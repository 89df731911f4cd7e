"""What the test session found missing: service name -> reason (see ``tests/conftest.py``)."""

skipped_services: dict[str, str] = {}
