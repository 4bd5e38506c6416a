"""Fixtures the attacks share with the EDC tests: the connector's callback receiver and the
service configured for it."""

from tests.test_edc import connector, edc_settings, live  # noqa: F401 - fixtures
