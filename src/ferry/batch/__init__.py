"""Offline batch prediction: read inputs from files, run them in batches, write results, resume."""

from ferry.batch.job import BatchJob, run_job
from ferry.batch.readers import IMAGE_SUFFIXES, Samples, read_inputs

__all__ = ["IMAGE_SUFFIXES", "BatchJob", "Samples", "read_inputs", "run_job"]
