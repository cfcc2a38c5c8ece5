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
