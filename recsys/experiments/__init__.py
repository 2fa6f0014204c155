"""Experiments: assignment, arm counters, statistics, the rollout controller and its simulator."""
