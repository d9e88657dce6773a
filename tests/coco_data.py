"""A tiny COCO captions dataset in the genuine format: a captions JSON and its JPEG images. The writers
live in ``datamodules/_samples.py``, beside the datamodules' ``write_sample``; this module keeps the name
the tests import them by."""

from datamodules._samples import COLOURS, PLACES, image_and_captions, write_coco_captions, write_coco_json

__all__ = ["COLOURS", "PLACES", "image_and_captions", "write_coco_captions", "write_coco_json"]
