"""Small sentiment treebanks in the SST format, with the SST's awkward tokens. The writers live in
``datamodules/_samples.py``, beside the datamodules' ``write_sample``; this module keeps the name the
tests import them by."""

from datamodules._samples import LEXICON, NBSP, label, random_tree, treebank_lines, write_treebank

__all__ = ["LEXICON", "NBSP", "label", "random_tree", "treebank_lines", "write_treebank"]
