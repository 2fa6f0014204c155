"""Deployment tooling: the local Kafka launcher and its assets (``deploy/kafka``)."""
