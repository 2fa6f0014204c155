"""Offline evaluation: the playlist-continuation split, ranking metrics, and the comparison run."""
