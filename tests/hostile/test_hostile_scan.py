"""Image-folder scans never loop or block: symlink cycles are followed once, FIFOs and devices
are skipped with a warning, the number of files is bounded."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from _hostile_common import cli, project, refused
from PIL import Image

from quantkit.data.images import find_images
from quantkit.errors import InputError


def _png(path: Path, value: int = 128, size: tuple[int, int] = (8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


def _names(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in find_images(root)]


def test_a_symlink_loop_is_followed_once(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "1.png")
    os.symlink(tmp_path / "a", tmp_path / "a" / "loop")
    os.symlink(tmp_path, tmp_path / "a" / "up")
    assert _names(tmp_path) == ["a/1.png"]


def test_two_loops_terminate(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "1.png")
    _png(tmp_path / "b" / "2.png")
    os.symlink(tmp_path / "b", tmp_path / "a" / "to_b")
    os.symlink(tmp_path / "a", tmp_path / "b" / "to_a")
    names = _names(tmp_path)
    assert sorted(Path(n).name for n in names) == ["1.png", "2.png"]


def test_a_symlinked_folder_outside_is_read(tmp_path: Path) -> None:
    _png(tmp_path / "elsewhere" / "x.png")
    (tmp_path / "root").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "root" / "linked")
    assert _names(tmp_path / "root") == ["linked/x.png"]


@pytest.mark.parametrize("kind", ["fifo", "device", "dangling", "self-loop"])
def test_non_regular_image_names_are_skipped_with_a_warning(
        tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    _png(tmp_path / "ok.png")
    bad = tmp_path / "x.png"
    if kind == "fifo":
        os.mkfifo(bad)
    elif kind == "device":
        os.symlink("/dev/zero", bad)
    elif kind == "dangling":
        os.symlink(tmp_path / "missing.png", bad)
    else:
        os.symlink(bad, bad)
    with caplog.at_level(logging.WARNING, logger="quantkit.data.images"):
        assert _names(tmp_path) == ["ok.png"]
    assert "skipped 1" in caplog.text


def test_the_number_of_files_is_bounded(tmp_path: Path) -> None:
    for i in range(5):
        _png(tmp_path / f"{i}.png")
    assert len(find_images(tmp_path, limit=5)) == 5
    with pytest.raises(InputError, match="more than 4 image files"):
        find_images(tmp_path, limit=4)


def test_calibrating_from_a_hostile_folder_works(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = project(tmp_path / "p")
    images = tmp_path / "images"
    for i in range(4):
        _png(images / f"{i}.png", value=40 * i)
    os.mkfifo(images / "pipe.png")
    os.symlink(images, images / "again")
    code, _, err = cli(["calibrate", model, "--data", f"{images}/", "--scales",
                        tmp_path / "s.json"], capsys)
    assert code == 0, err
    assert "skipped" in err and (tmp_path / "s.json").is_file()


# -- preprocessing sizes -------------------------------------------------------------------


@pytest.mark.parametrize("block, needle", [
    ("resize: [60000, 60000]", "preprocess.resize"),
    ("resize: 100000", "preprocess.resize"),
    ("center_crop: [0, 5]", "preprocess.center_crop"),
    ("resize: [8, 8]\ncenter_crop: 99999", "preprocess.center_crop"),
])
def test_absurd_preprocess_sizes_are_refused(tmp_path: Path, block: str, needle: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = project(tmp_path / "p")
    _png(tmp_path / "images" / "a.png")
    pre = tmp_path / "pre.yaml"
    pre.write_text(f"preprocess:\n  {block.replace(chr(10), chr(10) + '  ')}\n")
    code, _, err = cli(["calibrate", model, "--data", f"{tmp_path / 'images'}/", "--preprocess",
                        pre, "--scales", tmp_path / "s.json"], capsys)
    refused(code, err, needle, "16384")
    assert not (tmp_path / "s.json").exists()


def test_resizing_a_thin_image_by_its_short_side_is_bounded(tmp_path: Path) -> None:
    from quantkit.data.preprocess import PreprocessSpec

    spec = PreprocessSpec(resize=16000)
    thin = Image.new("RGB", (2, 4000))
    with pytest.raises(InputError, match=r"16000x32000000 pixels"):
        spec.apply(thin)


def test_a_hostile_value_is_not_expanded_in_the_message(tmp_path: Path) -> None:
    from quantkit.data.preprocess import PreprocessSpec

    huge = [list(range(1000))] * 1000
    with pytest.raises(InputError) as err:
        PreprocessSpec.from_mapping({"resize": huge})
    assert len(str(err.value)) < 600
