"""Answering with a version: the scoring graph, the onnxruntime scorer, ANN and the recommender."""
