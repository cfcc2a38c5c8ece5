import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from metricpose.errors import InputError
from metricpose.evaluate import Predictions
from metricpose.metrics import pa_mpjpe_per_sample
from metricpose.retrieval import (
    evaluate_retrieval,
    nearest_neighbours,
    normalise_pose,
    normalise_pose_prvipe,
    protocol,
    prvipe_sets,
    read_keys,
    read_prvipe_keys,
    write_keys,
)


def make_predictions(
    embedding_noise: float, seed: int = 0, instants: int = 30, cameras: int = 3
) -> Predictions:
    """Instants of two subjects seen from several cameras. The true pose of each instant is
    random; each camera sees it rotated (camera frame). The embedding is a noisy code of the
    instant, the same from every camera, so a perfect embedding retrieves the same instant."""
    rng = np.random.default_rng(seed)
    poses = rng.normal(0, 300, size=(instants, 17, 3))
    poses -= poses[:, :1]
    code = rng.normal(size=(instants, 16))
    rows = {
        k: [] for k in ("pose_gt", "embedding", "subject", "camera", "sequence", "frame", "instant")
    }
    for i in range(instants):
        for c in range(cameras):
            R = Rotation.from_euler("y", 90 * c, degrees=True).as_matrix()
            rows["pose_gt"].append(poses[i] @ R.T)
            rows["embedding"].append(code[i] + embedding_noise * rng.normal(size=16))
            rows["subject"].append("S9" if i % 2 else "S11")
            rows["camera"].append(f"cam{c}")
            rows["sequence"].append(f"seq{i % 2}")
            rows["frame"].append(i)
            rows["instant"].append(i)
    arr = {k: np.array(v) for k, v in rows.items()}
    return Predictions(
        pose_pred=arr["pose_gt"], pose_gt=arr["pose_gt"], pose_world=arr["pose_gt"], embedding=arr["embedding"].astype(np.float32),
        subject=arr["subject"], action=np.array(["a"] * len(arr["frame"])), camera=arr["camera"], sequence=arr["sequence"],
        frame=arr["frame"], instant=arr["instant"], labelled=np.ones(len(arr["frame"]), bool),
    )  # fmt: skip


def test_protocol_never_puts_the_query_camera_in_the_database():
    pred = make_predictions(0.0)
    sets = protocol(pred)
    assert [s.label for s in sets] == ["cam0", "cam1", "cam2"]
    for s in sets:
        assert (pred.camera[s.queries] == s.label).all()
        assert (pred.camera[s.database] != s.label).all()
    for s in protocol(pred, cross_subject=True):
        subject = s.label.split("/")[1]
        assert (pred.subject[s.queries] == subject).all() and (
            pred.subject[s.database] != subject
        ).all()


def test_perfect_embedding_scores_like_the_oracle_and_noise_like_random():
    perfect = evaluate_retrieval(make_predictions(0.0))
    assert perfect["embedding"]["mean_pa_mpjpe@1"] == pytest.approx(0.0, abs=1e-6)
    assert perfect["embedding"]["hit@1"] == 1.0
    assert perfect["oracle_3d"]["hit@1"] == 1.0 and perfect["oracle_3d"]["mean_pa_mpjpe@1"] < 1e-6
    # Random poses are far apart: random retrieval rarely hits, and its error is large.
    assert perfect["random"]["hit@1"] < 0.2 and perfect["random"]["mean_pa_mpjpe@1"] > 100
    noisy = evaluate_retrieval(make_predictions(100.0))["embedding"]
    assert noisy["hit@1"] < 0.3 and noisy["mean_pa_mpjpe@1"] > 100
    # @k never gets worse for hits, and averages over more retrievals for PA.
    assert noisy["hit@1"] <= noisy["hit@5"] <= noisy["hit@10"] <= noisy["hit@20"]


def test_hand_computed_hit_and_mean_pa_at_k():
    pred = make_predictions(0.0, instants=4, cameras=2)
    # Database of camera 1 for queries from camera 0: 4 rows; k = 1 retrieves the same instant.
    sets = protocol(pred)[:1]
    out = evaluate_retrieval(pred, sets=sets)["embedding"]
    assert out["queries"] == 4 and out["hit@1"] == 1.0
    # k >= 4 averages over the whole database: the mean PA-MPJPE of each query to all 4 poses.
    from metricpose.metrics import pa_mpjpe_per_sample

    q, db = sets[0].queries, sets[0].database
    expected = np.mean(
        [
            pa_mpjpe_per_sample(pred.pose_gt[db], np.repeat(pred.pose_gt[[i]], len(db), 0)).mean()
            for i in q
        ]
    )
    assert out["mean_pa_mpjpe@20"] == pytest.approx(expected, rel=1e-9)


def test_faiss_search_matches_brute_force_and_ivf_finds_the_neighbours():
    rng = np.random.default_rng(0)
    db, queries = (
        rng.normal(size=(2000, 32)).astype(np.float32),
        rng.normal(size=(50, 32)).astype(np.float32),
    )
    expected = np.argsort(((queries[:, None] - db[None]) ** 2).sum(-1), axis=1)[:, :5]
    np.testing.assert_array_equal(nearest_neighbours(db, queries, 5), expected)
    # Probing every list makes IVF exact; probing fewer trades recall for speed.
    np.testing.assert_array_equal(
        nearest_neighbours(db, queries, 5, ivf_lists=16, nprobe=16), expected
    )
    recall = [
        np.mean(
            [
                len(set(a) & set(b)) / 5
                for a, b in zip(
                    nearest_neighbours(db, queries, 5, 16, nprobe), expected, strict=True
                )
            ]
        )
        for nprobe in (1, 4, 16)
    ]
    assert recall[0] <= recall[1] <= recall[2] == 1.0


def test_normalised_pose_is_scale_free():
    pose = np.random.default_rng(1).normal(size=(1, 17, 3))
    np.testing.assert_allclose(normalise_pose(3 * pose + 5), normalise_pose(pose), atol=1e-12)
    assert np.sqrt((normalise_pose(pose) ** 2).sum(-1).mean()) == pytest.approx(1.0)


def test_key_files_round_trip(tmp_path):
    pred = make_predictions(1.0)
    sets = protocol(pred, query_stride=2)
    write_keys(tmp_path / "keys.txt", pred, sets)
    again = read_keys(tmp_path / "keys.txt", pred)
    assert [s.label for s in again] == [s.label for s in sets]
    for a, b in zip(sets, again, strict=True):
        np.testing.assert_array_equal(a.queries, b.queries)
        np.testing.assert_array_equal(np.sort(a.database), np.sort(b.database))
    assert evaluate_retrieval(pred, sets=again) == evaluate_retrieval(pred, sets=sets)
    (tmp_path / "bad.txt").write_text("query cam0 seq9 3 cam0\n")
    with pytest.raises(ValueError, match="bad.txt:1: frame"):
        read_keys(tmp_path / "bad.txt", pred)


def test_prvipe_normalisation_centres_on_the_pelvis_and_divides_by_the_torso():
    pose = np.zeros((1, 17, 3))
    pose[0, :] = [5.0, 5.0, 5.0]
    pose[0, 7] = [5.0, 5.0, 205.0]  # spine: 200 mm above the pelvis
    pose[0, 8] = [5.0, 155.0, 205.0]  # thorax: 150 mm from the spine
    pose[0, 10] = [5.0, 705.0, 205.0]
    out = normalise_pose_prvipe(pose)[0]
    np.testing.assert_allclose(out[0], 0.0)
    np.testing.assert_allclose(out[8], [0.0, 150 / 350, 200 / 350])
    np.testing.assert_allclose(out[10], [0.0, 700 / 350, 200 / 350])


def test_prvipe_protocol_pairs_cameras_and_scores_with_its_normalisation():
    pred = make_predictions(0.0, instants=2, cameras=3)
    sets = prvipe_sets(pred)
    assert [s.label for s in sets] == [
        "cam0->cam1", "cam0->cam2", "cam1->cam0", "cam1->cam2", "cam2->cam0", "cam2->cam1",
    ]  # fmt: skip
    for s in sets:
        a, b = s.label.split("->")
        assert (pred.camera[s.queries] == a).all() and (pred.camera[s.database] == b).all()
    # Swap the two instants' embeddings in camera 1 only: from camera 0, the top-1 retrieval in
    # camera 1 is the *other* instant, a hit only if its NP-MPJPE is below the threshold.
    swapped = pred.embedding.copy()
    cam1 = np.flatnonzero(pred.camera == "cam1")
    swapped[cam1] = swapped[cam1[::-1]]
    pred.embedding = swapped
    q0, q1 = np.flatnonzero(pred.camera == "cam0")
    d0, d1 = np.flatnonzero(pred.camera == "cam1")  # instant 0 and 1 (their codes swapped)

    def np_mpjpe(normalise, retrieved, query):  # the retrieved pose aligned to the query's
        return pa_mpjpe_per_sample(
            normalise(pred.pose_gt[[retrieved]]), normalise(pred.pose_gt[[query]])
        )[0]

    theirs = [np_mpjpe(normalise_pose_prvipe, r, q) for r, q in ((d1, q0), (d0, q1))]
    ours = [np_mpjpe(normalise_pose, r, q) for r, q in ((d1, q0), (d0, q1))]
    assert min(abs(a - b) for a, b in zip(theirs, ours, strict=True)) > 0.01  # they disagree
    pair = [s for s in sets if s.label == "cam0->cam1"]
    for threshold in (*theirs, *(t * 1.001 for t in theirs), *ours, min(theirs) * 0.999):
        out = evaluate_retrieval(
            pred, sets=pair, threshold=threshold, prvipe=True, references=False
        )
        expected = np.mean([d < threshold for d in theirs])  # strictly below
        assert out["embedding"]["hit@1"] == expected
        assert out["per_pair"]["cam0->cam1"]["hit@1"] == expected
    # The headline is the mean over pairs, not over pooled queries.
    both = evaluate_retrieval(pred, sets=sets, prvipe=True, references=False)
    per = [v["hit@1"] for v in both["per_pair"].values()]
    assert both["embedding"]["hit@1"] == pytest.approx(np.mean(per))


def test_prvipe_key_files_name_source_frames(tmp_path):
    pred = make_predictions(0.0, instants=4, cameras=2)
    # Stored frame f of each sequence was source frame 10 f (a converter's stride).
    takes = {"seq0": ("Directions 1", [10 * f for f in range(10)]), "seq1": ("Walking", None)}
    lines_cam0 = ["S11:Directions 1:cam0:000020", "S9:Walking:cam0:000003"]
    (tmp_path / "c0.txt").write_text("\n".join(lines_cam0) + "\n")
    (tmp_path / "c1.txt").write_text("S11:Directions 1:cam1:000000\n")
    cameras = read_prvipe_keys([tmp_path / "c0.txt", tmp_path / "c1.txt"], pred, takes)
    # seq0 holds the even instants (frames 0, 2), seq1 the odd ones; one row per camera each.
    (r_a, r_b), (r_c,) = cameras["cam0"], cameras["cam1"]
    assert (pred.sequence[r_a], pred.frame[r_a], pred.camera[r_a]) == ("seq0", 2, "cam0")
    assert (pred.sequence[r_b], pred.frame[r_b]) == ("seq1", 3)
    assert (pred.sequence[r_c], pred.frame[r_c], pred.camera[r_c]) == ("seq0", 0, "cam1")
    (tmp_path / "bad.txt").write_text("S11:Directions 1:cam1:000005\n")
    with pytest.raises(InputError, match=r"bad.txt:1: 'S11:Directions 1:cam1:000005' is not in"):
        read_prvipe_keys([tmp_path / "c0.txt", tmp_path / "bad.txt"], pred, takes)
    (tmp_path / "bad.txt").write_text("S11 Directions 1 cam1 5\n")
    with pytest.raises(InputError, match=r"bad.txt:1: expected 'subject:action:camera:frame'"):
        read_prvipe_keys([tmp_path / "bad.txt"], pred, takes)
