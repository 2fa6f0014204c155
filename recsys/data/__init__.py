"""Interaction data: loaders for the public data sets and files, id maps, synthetic data, lineage."""
