"""Adapters to the engines users already run: KServe (`kserve.py`) and Ray (`ray.py`), each behind its extra."""
