"""core.registry: a package's classes found from its files, private files left alone, clashes refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import datamodules
import modules
from core.registry import register_package
from tests.conftest import subprocess_env


def make_package(root: Path, name: str, files: dict[str, str]) -> Path:
    package = root / name
    package.mkdir()
    for file, text in files.items():
        (package / file).write_text(text, encoding="utf-8")
    return package


def test_every_public_class_of_a_file_is_registered(tmp_path, monkeypatch):
    package = make_package(
        tmp_path,
        "lessons_pkg",
        {
            "one.py": "class Lesson:\n    pass\n\nclass _Hidden:\n    pass\n\nimported = dict\n",
            "two.py": "from lessons_pkg.one import Lesson\n\nclass Other:\n    pass\n",
            "_private.py": "raise RuntimeError('a private file is never imported by the registry')\n",
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace: dict = {}
    names = register_package("lessons_pkg", [str(package)], namespace)
    assert names == ["Lesson", "Other"]  # Lesson once, from the file that defines it; no _Hidden, no dict
    assert namespace["Lesson"].__module__ == "lessons_pkg.one"
    for name in [m for m in sys.modules if m.startswith("lessons_pkg")]:
        monkeypatch.delitem(sys.modules, name)


def test_two_files_defining_one_name_is_an_error(tmp_path, monkeypatch):
    package = make_package(
        tmp_path, "clash_pkg", {"a.py": "class Same:\n    pass\n", "b.py": "class Same:\n    pass\n"}
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match=r"class Same is defined in both clash_pkg\.a and clash_pkg\.b"):
        register_package("clash_pkg", [str(package)], {})
    for name in [m for m in sys.modules if m.startswith("clash_pkg")]:
        monkeypatch.delitem(sys.modules, name)


def test_the_lesson_packages_register_their_classes_without_importing_numba():
    assert {"SineRNN", "SkipGramModel", "LandmarkGrid"} <= set(modules.__all__)
    assert {"MNISTDataModule", "TextCorpusDataModule", "TensorBatches"} <= set(datamodules.__all__)
    assert modules.SineRNN.__module__ == "modules.sine_rnn"
    # modules/_word2vec_loop.py (numba) is private: imported when a word2vec model is built, not before.
    script = "import sys, modules, datamodules; print('numba' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", script], env=subprocess_env(), capture_output=True, text=True
    )
    assert done.stdout.strip() == "False", done.stderr[-2000:]
