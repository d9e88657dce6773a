"""FaceLandmarksDataModule on a tiny CSV + JPEG dataset: points moved exactly by rescale, crop and flip
(with the left/right relabelling), the seeded split, predict's map back to the files' pixels, the
download, and one-line errors for missing or malformed data."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
import zipfile
from pathlib import Path

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

import datamodules.face_landmarks as face_landmarks
from core.errors import DataConfigError, DataNotFoundError
from datamodules import FaceLandmarksDataModule
from datamodules.face_landmarks import MIRROR_68, LandmarkHorizontalFlip, decode
from tests.face_data import face_template, read_points, write_faces

SIZE, CROP = 24, 20


@pytest.fixture
def faces_dir(tmp_path: Path) -> Path:
    return write_faces(tmp_path / "faces", count=12)


def module(faces_dir: Path, **kwargs) -> FaceLandmarksDataModule:
    # Geometry tests need the crop and flip alone: no rotation, zoom, shift or colour change.
    plain = {"rotation": 0, "scale_range": (1, 1), "translate": 0, "color_jitter": 0}
    kwargs = {"image_size": SIZE, "crop_size": CROP, "val_split": 3, "batch_size": 16, **plain, **kwargs}
    return FaceLandmarksDataModule(data_dir=str(faces_dir), **kwargs)


def test_rescale_and_pad_move_points_exactly(faces_dir):
    faces = module(faces_dir).faces()
    csv = read_points(faces_dir)
    assert faces.images.shape == (12, 3, SIZE, SIZE) and faces.images.dtype == torch.uint8
    assert faces.landmarks.shape == (12, 68, 2)
    # (file width, height) -> (resized width, height, left pad, top pad), worked out by hand: the longer
    # side becomes 24, the shorter one int(24 * short / long), centred.
    expected = {
        (48, 36): (24, 18, 0, 3),
        (36, 48): (18, 24, 3, 0),
        (40, 40): (24, 24, 0, 0),
        (50, 30): (24, 14, 0, 5),
    }
    for i, name in enumerate(faces.names):
        original = decode(faces_dir / name)
        height, width = original.shape[-2:]
        new_w, new_h, left, top = expected[(width, height)]
        points = csv[name] * torch.tensor([new_w / width, new_h / height]) + torch.tensor([left, top])
        torch.testing.assert_close(faces.landmarks[i], points)
        # The picture sits in the middle, the padding is black.
        resized = F.resize(original, [new_h, new_w])
        assert torch.equal(faces.images[i][:, top : top + new_h, left : left + new_w], resized)
        assert faces.images[i].sum() == resized.sum()
        # And the map back lands on the CSV's numbers.
        back = faces.landmarks[i] * faces.to_original[i, 0] + faces.to_original[i, 1]
        torch.testing.assert_close(back, csv[name], atol=1e-4, rtol=0)


def test_random_crop_moves_points_exactly(faces_dir):
    dm = module(faces_dir, horizontal_flip=False)
    dm.setup("fit")
    images, landmarks = next(iter(dm.train_dataloader()))
    assert images.shape == (9, 3, SIZE, SIZE)
    torch.manual_seed(0)
    crops, points = dm.augment(images, landmarks)
    assert crops.shape == (9, 3, CROP, CROP) and points.shape == (9, 68, 2)
    offsets = set()
    for i in range(len(images)):
        # Where the crop was cut is found from the pixels; the points must have moved by exactly that.
        found = [
            (left, top)
            for top in range(SIZE - CROP + 1)
            for left in range(SIZE - CROP + 1)
            if torch.equal(crops[i], images[i][:, top : top + CROP, left : left + CROP])
        ]
        assert found
        left, top = found[0]
        assert torch.equal(points[i], landmarks[i] - torch.tensor([left, top], dtype=torch.float32))
        offsets.add((left, top))
    assert len(offsets) > 1, "every face got the same crop: the offsets are not drawn per face"


def test_evaluation_splits_are_centre_crops(faces_dir):
    dm = module(faces_dir)
    dm.setup("fit")
    faces = dm.faces()
    _, held_out = dm.split_indices(12)
    images, points = dm.splits["val"]
    o = (SIZE - CROP) // 2
    assert torch.equal(images, faces.images[held_out][..., o : o + CROP, o : o + CROP])
    assert torch.equal(points, faces.landmarks[held_out] - o)
    # Evaluation batches are not augmented: a trainer-less transfer only converts to [0, 1] floats.
    batch_images, batch_points = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert batch_images.dtype == torch.float32 and torch.equal(batch_images, images.float() / 255)
    assert torch.equal(batch_points, points)


def test_mirror_permutation_is_an_involution_fixing_the_midline():
    assert sorted(MIRROR_68) == list(range(68))
    assert all(MIRROR_68[MIRROR_68[i]] == i for i in range(68))
    # chin, nose bridge, nose tip, lip middles
    assert [i for i in range(68) if MIRROR_68[i] == i] == [8, 27, 28, 29, 30, 33, 51, 57, 62, 66]


def flip(
    image: torch.Tensor, points: torch.Tensor, transform: v2.Transform
) -> tuple[torch.Tensor, torch.Tensor]:
    size = tuple(image.shape[-2:])
    out_image, out_points = transform(tv_tensors.Image(image), tv_tensors.KeyPoints(points, canvas_size=size))
    return out_image.as_subclass(torch.Tensor), out_points.as_subclass(torch.Tensor)


def test_flip_moves_and_swaps_left_and_right_points():
    width, height = 40, 30
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
    # An asymmetric face off the image's centre: the template placed left, with jitter.
    points = face_template() * 20 + torch.tensor([3.0, 4.0]) + torch.rand(68, 2)
    flipped_image, flipped = flip(image, points, LandmarkHorizontalFlip(p=1.0))
    assert torch.equal(flipped_image, image.flip(-1))

    def mirror(p: torch.Tensor) -> torch.Tensor:  # torchvision's flip: x -> width - 1 - x
        return torch.stack([width - 1 - p[..., 0], p[..., 1]], dim=-1)

    # The subject's right eye's outer corner lands where the mirror of the left one's was, and back.
    torch.testing.assert_close(flipped[36], mirror(points[45]))
    torch.testing.assert_close(flipped[45], mirror(points[36]))
    torch.testing.assert_close(flipped[8], mirror(points[8]))  # the chin stays the chin
    # The mirrored face reads like a face: each side's points on its own side, in iBUG order.
    x = flipped[:, 0]
    assert x[36] < x[39] < x[42] < x[45]  # eye corners, left to right across the image
    assert x[0] < x[8] < x[16] and x[17] < x[21] < x[22] < x[26] and x[31] < x[33] < x[35]
    assert x[48] < x[51] and x[51] < x[54] and x[60] < x[64]
    # A plain flip moves the points but leaves the labels on the wrong side.
    _, unlabelled = flip(image, points, v2.RandomHorizontalFlip(p=1.0))
    assert unlabelled[36, 0] > unlabelled[45, 0]


def test_flipping_a_symmetric_face_gives_the_same_face():
    width = 33
    # The template is symmetric about x = 0.5 by construction (independently of MIRROR_68); in pixels,
    # torchvision's mirror line is x = (width - 1) / 2.
    points = face_template() * (width - 1)
    _, flipped = flip(torch.zeros(3, width, width, dtype=torch.uint8), points, LandmarkHorizontalFlip(p=1.0))
    torch.testing.assert_close(flipped, points, atol=1e-4, rtol=0)


def test_training_batches_flip_about_half_the_faces(faces_dir):
    dm = module(faces_dir, crop_size=SIZE, val_split=0)  # no crop: only the flip acts
    dm.setup("fit")
    images, landmarks = next(iter(dm.train_dataloader()))
    torch.manual_seed(1)
    flips = 0
    for _ in range(4):
        out_images, out_points = dm.augment(images, landmarks)
        for i in range(len(images)):
            if torch.equal(out_images[i], images[i]):
                assert torch.equal(out_points[i], landmarks[i])
            else:
                assert torch.equal(out_images[i], images[i].flip(-1))
                mirrored = torch.stack([SIZE - 1 - landmarks[i, :, 0], landmarks[i, :, 1]], dim=-1)
                assert torch.equal(out_points[i], mirrored[list(MIRROR_68)])
                flips += 1
    assert 0.25 < flips / (4 * len(images)) < 0.75


def test_split_is_seeded(faces_dir):
    def held_out(seed: int, val_split: float = 3) -> list[str]:
        dm = module(faces_dir, seed=seed, val_split=val_split)
        dm.setup("predict")
        return dm.predict_names

    assert held_out(1) == held_out(1) and len(held_out(1)) == 3
    assert held_out(1) != held_out(2)
    assert len(held_out(1, 0.25)) == 3
    dm = module(faces_dir)
    dm.setup("fit")
    assert len(dm.splits["train"][0]) == 9 and len(dm.splits["val"][0]) == 3


def test_predict_maps_back_to_the_files_pixels(faces_dir):
    dm = module(faces_dir)
    dm.setup("fit")
    dm.setup("predict")
    images, to_original = dm.splits["predict"]
    val_images, val_points = dm.splits["val"]
    assert torch.equal(images, val_images) and to_original.shape == (3, 2, 2)
    csv = read_points(faces_dir)
    expected = torch.stack([csv[name] for name in dm.predict_names])
    torch.testing.assert_close(
        val_points * to_original[:, None, 0] + to_original[:, None, 1], expected, atol=1e-4, rtol=0
    )


@pytest.mark.parametrize("flag", ["predict_path", "predict_dir"])  # predict_dir: the former name
def test_predict_path_reads_unlabelled_images(faces_dir, tmp_path, flag):
    folder = tmp_path / "new"
    folder.mkdir()
    for name in ("face_03.jpg", "face_00.jpg"):
        shutil.copy(faces_dir / name, folder / name)
    (folder / ".hidden").write_text("skipped")
    (folder / "notes.txt").write_text("not an image")
    with pytest.raises(DataConfigError, match=rf"--data.{flag}: .*notes.txt is not an image that can be"):
        module(faces_dir, **{flag: str(folder)}).setup("predict")
    (folder / "notes.txt").unlink()
    dm = module(faces_dir, **{flag: str(folder)})
    dm.setup("predict")
    images, to_original = dm.splits["predict"]
    assert dm.predict_names == ["face_00.jpg", "face_03.jpg"]
    # The same pixels and map as the labelled path gives those files.
    labelled = module(faces_dir, val_split=0)
    faces = labelled.faces()
    index = [faces.names.index(n) for n in dm.predict_names]
    crops, _, maps = labelled.centre_crop(
        faces.images[index], faces.landmarks[index], faces.to_original[index]
    )
    assert torch.equal(images, crops) and torch.equal(to_original, maps)


@pytest.fixture
def served(tmp_path: Path):
    """A local HTTP server over ``tmp_path / "www"``; yields its base URL."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # keep the test output clean
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", root
    server.shutdown()


def test_download_fetches_and_unzips_into_data_dir(faces_dir, served, tmp_path, monkeypatch):
    base, root = served
    with zipfile.ZipFile(root / "faces.zip", "w") as archive:  # the tutorial's layout: a faces/ folder
        for path in faces_dir.iterdir():
            archive.write(path, f"faces/{path.name}")
    monkeypatch.setattr(face_landmarks, "URL", f"{base}/faces.zip")
    target = tmp_path / "data" / "faces"
    dm = module(target, download=True)
    dm.prepare_data()
    assert (target / "face_landmarks.csv").is_file() and not (target / "faces").exists()
    assert len(dm.faces().names) == 12
    monkeypatch.setattr(face_landmarks, "URL", f"{base}/missing.zip")
    with pytest.raises(DataNotFoundError, match=r"could not download .*missing.zip into data_dir=.*404"):
        module(tmp_path / "elsewhere", download=True).prepare_data()


def test_missing_data_is_one_clear_error(tmp_path, faces_dir):
    with pytest.raises(DataNotFoundError, match=r"expected .*face_landmarks.csv .*--data.download true"):
        module(tmp_path / "absent").faces()
    (faces_dir / "face_02.jpg").unlink()
    with pytest.raises(DataNotFoundError, match=r"image .*face_02.jpg not found \(.*csv line 4 names it\)"):
        module(faces_dir).faces()
    (faces_dir / "face_02.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataNotFoundError, match=r"cannot decode image .*face_02.jpg"):
        module(faces_dir).faces()
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataNotFoundError, match=r"--data.predict_dir=.*nothing: the folder holds no files"):
        dm = module(faces_dir, predict_dir=str(tmp_path / "nothing"))
        dm.setup("predict")
    with pytest.raises(DataNotFoundError, match=r"--data.predict_path=.*\*.png: the pattern matches no file"):
        dm = module(faces_dir, predict_path=str(tmp_path / "*.png"))
        dm.setup("predict")
    with pytest.raises(DataConfigError, match=r"predict_dir is the former name of predict_path"):
        module(faces_dir, predict_dir=str(tmp_path), predict_path=str(tmp_path))


def replace_line(path: Path, number: int, edit) -> None:
    lines = path.read_text().splitlines()
    lines[number] = edit(lines[number])
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("line", "edit", "message"),
    [
        (0, lambda s: s.rsplit(",", 1)[0], r"header must have 137 columns .* found 136"),
        (2, lambda s: s.rsplit(",", 1)[0], r"face_landmarks.csv line 3: 136 columns, expected 137"),
        (3, lambda s: s + ",1.0", r"line 4: 138 columns, expected 137"),
        (
            2,
            lambda s: s.replace(",", ",abc,", 1).rsplit(",", 1)[0],
            r"line 3: column 2 \(part_0_x\) is 'abc', not a number",
        ),
        (
            1,
            lambda s: s.rsplit(",", 1)[0] + ",nan",
            r"line 2: point 67 of face_00.jpg is \(x=.*, y=nan\); coord",
        ),
        (
            1,
            lambda s: s.rsplit(",", 1)[0] + ",inf",
            r"line 2: point 67 of face_00.jpg .*y=inf.*must be finite",
        ),
    ],
)
def test_malformed_csv_is_one_clear_error(faces_dir, line, edit, message):
    replace_line(faces_dir / "face_landmarks.csv", line, edit)
    with pytest.raises(DataConfigError, match=message):
        module(faces_dir).setup("fit")


def test_impossible_settings_are_clear_errors(faces_dir):
    with pytest.raises(
        DataConfigError, match=r"--data.crop_size=30 must be between 1 and --data.image_size=24"
    ):
        module(faces_dir, crop_size=30)
    with pytest.raises(DataConfigError, match=r"val_split=12 leaves no training faces out of 12"):
        module(faces_dir, val_split=12).setup("fit")
    with pytest.raises(DataConfigError, match=r"holds out no faces to test on"):
        module(faces_dir, val_split=0).setup("test")
    header = (faces_dir / "face_landmarks.csv").read_text().splitlines()[0]
    (faces_dir / "face_landmarks.csv").write_text(header + "\n")
    with pytest.raises(DataConfigError, match=r"holds no faces, only a header"):
        module(faces_dir).faces()


def test_rotation_zoom_and_shift_move_points_with_the_pixels(faces_dir):
    dm = module(
        faces_dir, rotation=30, scale_range=(0.8, 1.2), translate=0.1, crop_size=SIZE, horizontal_flip=False
    )
    # Four marked pixels, each its own value; every other landmark sits on the centre one.
    marks = {0: ((4, 6), 50), 16: ((19, 5), 100), 30: ((12, 12), 150), 57: ((11, 19), 200)}
    images = torch.zeros(6, 3, SIZE, SIZE, dtype=torch.uint8)
    points = torch.tensor([12.0, 12.0]).repeat(6, 68, 1)
    for index, ((x, y), value) in marks.items():
        images[:, :, y, x] = value
        points[:, index] = torch.tensor([x, y], dtype=torch.float32)
    torch.manual_seed(0)
    moved_images, moved_points = dm.augment(images, points)
    assert not torch.equal(moved_points, points)
    checked = 0
    for i in range(len(images)):
        for index, (_, value) in marks.items():
            x, y = moved_points[i, index].round().long().tolist()
            if 1 <= x < SIZE - 1 and 1 <= y < SIZE - 1:
                # torchvision moves the pixel (nearest neighbour) where it moved the point, within a pixel.
                assert (moved_images[i, 0, y - 1 : y + 2, x - 1 : x + 2] == value).any()
                checked += 1
    assert checked >= 18
