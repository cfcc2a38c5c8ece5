"""Identity leakage probe: how well a linear classifier finds the subject in frozen embeddings."""

from __future__ import annotations

import numpy as np
import torch

from metricpose.evaluate import Predictions


def identity_probe(pred: Predictions, seed: int = 0, steps: int = 200) -> dict[str, float]:
    """Train a multinomial logistic regression (L-BFGS, light L2) on the embeddings of two
    thirds of each subject's sequences and test it on the rest, so that the test frames are
    other takes, not neighbours of training frames.

    Returns the held-out accuracy and the chance level (1 / number of subjects).
    """
    subjects = np.unique(pred.subject)
    if len(subjects) < 2:
        raise ValueError("the identity probe needs at least two subjects")
    rng = np.random.default_rng([seed, 13])
    test = np.zeros(len(pred.subject), dtype=bool)
    for s in subjects:
        seqs = np.unique(pred.sequence[pred.subject == s])
        held = rng.permutation(seqs)[: max(1, len(seqs) // 3)]
        test |= np.isin(pred.sequence, held)
    labels = torch.as_tensor(np.searchsorted(subjects, pred.subject))
    x = torch.as_tensor(pred.embedding, dtype=torch.float32)
    mean, std = x[~test].mean(0), x[~test].std(0) + 1e-6
    x = (x - mean) / std
    torch.manual_seed(seed)
    linear = torch.nn.Linear(x.shape[1], len(subjects))
    optimiser = torch.optim.LBFGS(
        linear.parameters(), max_iter=steps, line_search_fn="strong_wolfe"
    )
    train_x, train_y = x[~test], labels[~test]

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = (
            torch.nn.functional.cross_entropy(linear(train_x), train_y)
            + 1e-3 * linear.weight.pow(2).sum()
        )
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        accuracy = (linear(x[test]).argmax(1) == labels[test]).float().mean().item()
    return {"accuracy": accuracy, "chance": 1.0 / len(subjects)}


def heading_angles(poses_cam: np.ndarray) -> np.ndarray:
    """(N,) heading in radians: the yaw of the body's forward axis in the camera's x-z plane
    (0 = facing away from the camera along +z) from (N, 17, 3) root-relative camera-frame poses."""
    from metricpose.skeleton import body_frame

    forward = body_frame(torch.as_tensor(poses_cam, dtype=torch.float64))[..., :, 1].numpy()
    return np.arctan2(forward[:, 0], forward[:, 2])


def heading_probe(train: Predictions, test: Predictions, ridge: float = 1.0) -> dict[str, float]:
    """How much of the body's heading relative to the camera a linear read-out finds in frozen
    embeddings: ridge regression from embeddings to (cos, sin) of the heading, fitted on
    ``train``'s labelled crops, scored on ``test``'s as the median angular error in degrees
    (0: all there; about 90: none, as for a constant guess over uniformly spread headings).

    The camera-frame pose needs this information; a view-invariant embedding removes it.
    """

    def design(p: Predictions) -> tuple[np.ndarray, np.ndarray]:
        keep = p.labelled
        x = np.concatenate([p.embedding[keep], np.ones((keep.sum(), 1))], axis=1)
        yaw = heading_angles(p.pose_gt[keep])
        return x, np.stack([np.cos(yaw), np.sin(yaw)], axis=1)

    x, y = design(train)
    weights = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)
    xt, yt = design(test)
    guess = xt @ weights
    error = np.abs(
        np.angle(
            np.exp(1j * (np.arctan2(guess[:, 1], guess[:, 0]) - np.arctan2(yt[:, 1], yt[:, 0])))
        )
    )
    return {"median_error_deg": float(np.degrees(np.median(error)))}
