"""The word-embedding callback's neighbours figure: which words it places, in which group, and where."""

from __future__ import annotations

import torch

from modules.word_embeddings import neighbour_map, pca_2d


def test_pca_2d_keeps_the_two_directions_the_unit_vectors_spread_along():
    # Unit vectors in 3-D spread along the first two axes (x most), none along the third.
    vectors = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0.8, 0.6, 0], [0.8, -0.6, 0]]) * 7  # scaling ignored
    points = pca_2d(vectors)
    assert points.shape == (4, 2)
    unit = vectors / 7
    centred = unit - unit.mean(dim=0)
    # Nothing lies off the plane: the distances between words are kept exactly.
    torch.testing.assert_close(torch.cdist(points, points), torch.cdist(centred, centred).double())
    # The first axis is the wider one, and each axis points towards its largest coordinate.
    assert points[:, 0].var() > points[:, 1].var()
    assert points[points[:, 0].abs().argmax(), 0] > 0 and points[points[:, 1].abs().argmax(), 1] > 0


def test_neighbour_map_places_each_word_once_in_its_first_group():
    vectors = torch.randn(10, 5, generator=torch.Generator().manual_seed(0))
    # Word 4 is a neighbour of both probes (2 and 7), and probe 7 is a neighbour of probe 2.
    points = neighbour_map(vectors, [(2, [4, 7, 1]), (7, [4, 9])])
    assert [(word, group) for word, group, _, _ in points] == [(2, 0), (4, 0), (7, 0), (1, 0), (9, 1)]
    expected = pca_2d(vectors[[2, 4, 7, 1, 9]])
    coordinates = torch.tensor([[x, y] for _, _, x, y in points], dtype=torch.float64)
    torch.testing.assert_close(coordinates, expected, atol=1e-4, rtol=0)  # rounded to 4 decimals
    assert neighbour_map(vectors, []) == []
