"""Recommenders: the ALS model the service trains and the baselines it is measured against."""

from recsys.models.cuda_libs import preload

preload()
