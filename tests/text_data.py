"""Small plain-text corpora (two disjoint topics plus common words), so the real tokenising and
streaming code runs. The writer lives in ``datamodules/_samples.py``, beside the datamodules'
``write_sample``; this module keeps the name the tests import it by."""

from datamodules._samples import COMMON, TOPICS, write_topics_corpus

__all__ = ["COMMON", "TOPICS", "write_topics_corpus"]
