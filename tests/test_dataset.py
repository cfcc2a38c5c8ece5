import numpy as np
import torch
from torch.utils.data import DataLoader

from metricpose.cameras import project_points
from metricpose.data.dataset import FrameKey, MultiViewDataset


def test_samples_are_synchronised_views_with_consistent_geometry(tiny_studio):
    ds = MultiViewDataset(tiny_studio, num_views=4)
    sample = ds[FrameKey(5, (2, 0))]
    assert sample["images"].shape == (2, 64, 64, 3)
    assert sample["views"].tolist() == [2, 0]
    # pose_cam is the world pose in each camera, root-relative; reprojecting the absolute
    # camera-frame pose with the crop K lands inside the crop.
    world = sample["pose_world"].double().numpy()
    for v in range(2):
        R, t = sample["R"][v].double().numpy(), sample["t"][v].double().numpy()
        cam_pts = world @ R.T + t
        np.testing.assert_allclose(sample["pose_cam"][v].numpy(), cam_pts - cam_pts[0], atol=1e-2)
        uv = project_points(cam_pts, sample["K"][v].double().numpy())
        assert (uv > -2).all() and (uv < 66).all()
    # The same instant from two cameras has the same root-relative pose up to rotation.
    a, b = sample["pose_cam"].numpy()
    np.testing.assert_allclose(np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1), atol=1e-2)


def test_subject_filter_and_ids(tiny_studio):
    ds = MultiViewDataset(tiny_studio, subjects=["S1", "S9"])
    assert ds.subjects == ["S1", "S9"] and len(ds) == 2 * 4 * 16
    assert set(np.unique(ds.subject_index)) == {0, 1}


def test_workers_give_the_same_batches(tiny_studio):
    ds = MultiViewDataset(tiny_studio)
    keys = [FrameKey(i, (i % 4, (i + 1) % 4)) for i in range(0, 64, 5)]
    single = list(
        DataLoader(
            keys,
            batch_size=4,
            collate_fn=ds.batch,
        )
    )
    multi = list(
        DataLoader(
            keys,
            batch_size=4,
            num_workers=2,
            collate_fn=ds.batch,
        )
    )
    for a, b in zip(single, multi, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key])


def test_a_batch_is_its_samples_collated(tiny_studio):
    """dataset.batch converts once per field what default_collate stacks sample by sample:
    the same names, dtypes, shapes and values, plain indices and chosen views alike."""
    ds = MultiViewDataset(tiny_studio, subjects=["S1", "S9"])
    for keys in ([FrameKey(i, (i % 4, (i + 3) % 4)) for i in (0, 7, 70, 100)], [3, 90]):
        expected = torch.utils.data.default_collate([ds[k] for k in keys])
        got = ds.batch(keys)
        assert got.keys() == expected.keys()
        for name, value in expected.items():
            assert got[name].dtype == value.dtype, name
            assert torch.equal(got[name], value), name
    assert got["labelled"].shape == (2,) and got["K"].dtype == torch.float32
