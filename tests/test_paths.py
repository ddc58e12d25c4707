"""Paths: a queued experiment's temporary workspace shares the main workspace's download cache."""

from hue import paths


def test_queued_workspace_links_the_main_download_cache(tmp_path):
    main = tmp_path / "repo"
    (main / "data/raw/digits").mkdir(parents=True)
    (main / "data/raw/digits/0.png").write_bytes(b"png")
    temp = main / ".dvc/tmp/exps/tmpabc123"
    temp.mkdir(parents=True)
    link = paths.share_download_cache(temp)
    assert link == temp / "data/raw" and link.is_symlink()
    assert (temp / "data/raw/digits/0.png").read_bytes() == b"png"
    assert paths.share_download_cache(temp) == link  # idempotent


def test_an_ordinary_workspace_is_left_alone(tmp_path):
    assert paths.share_download_cache(tmp_path) is None and not (tmp_path / "data").exists()
