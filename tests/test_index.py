import numpy as np

from hue import index


def test_pca_is_fitted_on_memory_and_projection_is_unit_length():
    rng = np.random.default_rng(0)
    memory = rng.normal(size=(300, 40)).astype(np.float32)
    pca = index.fit_pca(memory, 8, seed=0)
    assert pca["components"].shape == (8, 40) and np.allclose(pca["mean"], memory.mean(0), atol=1e-5)
    out = index.project(rng.normal(size=(5, 40)).astype(np.float32), pca)
    assert out.shape == (5, 8) and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert index.project(memory, None) is memory


def test_annoy_build_is_deterministic(tmp_path):
    vectors = np.random.default_rng(1).normal(size=(200, 16)).astype(np.float32)
    index.build_annoy(vectors, 5, seed=3).save(str(tmp_path / "a.ann"))
    index.build_annoy(vectors, 5, seed=3).save(str(tmp_path / "b.ann"))
    assert (tmp_path / "a.ann").read_bytes() == (tmp_path / "b.ann").read_bytes()
