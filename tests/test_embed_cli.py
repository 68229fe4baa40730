"""``kiosk embed`` on a few fixture images, including corrupt and faceless ones."""

from __future__ import annotations

import numpy as np

from kiosk import cli


def test_embed_writes_paths_embeddings_found_and_skips_corrupt_files(face_tree, tmp_path, capsys):
    (face_tree / "Colin_Powell" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken jpeg")
    (face_tree / "Colin_Powell" / "empty.png").write_bytes(b"")
    from tests.conftest import png_header_only

    png_header_only(face_tree / "Colin_Powell" / "bomb.png", 100_000, 100_000)
    blank = np.full((120, 160, 3), 200, np.uint8)
    import cv2

    (face_tree / "nobody").mkdir()
    cv2.imwrite(str(face_tree / "nobody" / "wall.png"), blank)
    (face_tree / "notes.txt").write_text("not an image, ignored")
    out = tmp_path / "faces.npz"
    assert cli.main(["embed", str(face_tree), "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "corrupt.jpg" in captured.err and "empty.png" in captured.err and "bomb.png is too large" in captured.err
    assert "13 images embedded (12 with a face, 1 without), 3 unreadable skipped" in captured.out
    data = np.load(out)
    paths = list(data["paths"])
    assert paths[0] == "Colin_Powell/Colin_Powell_0001.jpg" and "nobody/wall.png" in paths
    assert data["embeddings"].dtype == np.float32 and data["embeddings"].shape == (13, 128)
    assert data["found"].dtype == bool and data["found"].sum() == 12
    wall = paths.index("nobody/wall.png")
    assert not data["found"][wall] and not data["embeddings"][wall].any()
    norms = np.linalg.norm(data["embeddings"][data["found"]], axis=1)
    assert np.allclose(norms, 1, atol=1e-5)
    identities = {p.split("/")[0] for p in paths}
    assert identities == {"Colin_Powell", "George_W_Bush", "Hugo_Chavez", "nobody"}


def test_embed_on_a_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["embed", str(tmp_path / "nope"), "--out", str(tmp_path / "x.npz"), "--quiet"]) == 2
    assert "is not a folder" in capsys.readouterr().err
