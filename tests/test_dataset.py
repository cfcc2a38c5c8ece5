import numpy as np
import torch
from torch.utils.data import DataLoader

from metricpose.cameras import crop_intrinsics, project_points
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


def test_a_batch_is_built_from_its_sequences(tiny_studio):
    """dataset.batch builds a whole batch at once; each row is what the sequence folder says of
    that instant and those cameras (crops, crop intrinsics, camera-frame pose, ids), plain
    indices and chosen views alike, and a sample alone is the same row."""
    ds = MultiViewDataset(tiny_studio, subjects=["S1", "S9"])
    ds.sequences[-1].poses_3d = None  # one unlabelled sequence: its labels must read as zeros
    last = len(ds) - 1
    for keys in ([FrameKey(i, (i % 4, (i + 3) % 4)) for i in (0, 7, 70, last)], [3, last]):
        got = ds.batch(keys)
        assert got["images"].dtype == torch.uint8 and got["K"].dtype == torch.float32
        for row, key in enumerate(keys):
            index, views = (key.index, key.views) if isinstance(key, FrameKey) else (key, (0, 1))
            seq = ds.sequences[ds.seq_index[index]]
            t = int(ds.frame_index[index])
            cams = [seq.cameras[v] for v in views]
            expected = {
                "images": np.stack([seq.frames(c.name)[t] for c in cams]),
                "K": np.stack(
                    [
                        crop_intrinsics(c.K, seq.boxes[v, t], 64)
                        for v, c in zip(views, cams, strict=True)
                    ]
                ),
                "R": np.stack([c.R for c in cams]),
                "pose_cam": seq.poses_camera(t, views) if seq.labelled else np.zeros((2, 17, 3)),
                "labelled": seq.labelled,
                "frame": t,
                "views": views,
            }
            for name, value in expected.items():
                np.testing.assert_allclose(
                    got[name][row].numpy(), value, rtol=1e-6, atol=1e-3, err_msg=name
                )
            alone = ds[key]
            for name in got:
                assert torch.equal(alone[name], got[name][row]), name
    assert got["labelled"].tolist() == [True, False]
