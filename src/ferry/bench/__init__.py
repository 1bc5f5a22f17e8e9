"""`ferry bench`: latency and throughput per backend, batch size and thread count; `--tune` records winners."""

from ferry.bench.measure import Measurement, measure, measure_each, measure_predictor
from ferry.bench.report import html_report
from ferry.bench.tune import tuning_record

__all__ = ["Measurement", "html_report", "measure", "measure_each", "measure_predictor", "tuning_record"]
