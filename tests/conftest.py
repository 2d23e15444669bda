"""Fixtures for every test under tests/ (factories are plain functions in tests/factories.py;
fakes live in tests/fakes/)."""

from tests.fixtures import admin_kube, kube, kube_objects, kube_resources

__all__ = ["admin_kube", "kube", "kube_objects", "kube_resources"]
