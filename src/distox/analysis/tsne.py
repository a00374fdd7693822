"""t-SNE of penultimate features of clean and poisoned test images, before and after a defense
(SPEC §6).

Penultimate features = the input of the model's classifier — its last ``nn.Linear`` in forward
order, or a convolutional class head's input averaged over positions — captured with a forward
hook (any architecture whose classifier distox can find). In a backdoored
model the poisoned images form their own tight cluster next to the target class; after a
successful defense they fall back among the clean images of their true classes.

The points are a seeded subsample (default ≤ 1000: half clean, half poisoned) embedded with
scikit-learn's :class:`~sklearn.manifold.TSNE` (2-D, PCA initialisation, seeded).

Example:
    >>> feats = penultimate_features(model, x)
    >>> xy = embed(feats.numpy(), seed=0)
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..defenses.probe import layer_input
from ..errors import DistoxError
from ..models.selection import SelectionError, classifier_name
from ..utils import on_device


def penultimate_features(model: nn.Module, x: torch.Tensor, batch_size: int = 512,
                         device: str | torch.device = "cpu") -> torch.Tensor:
    """(N, D) inputs of the model's classifier for images ``x`` (eval mode, each module's training
    flag restored): the last ``nn.Linear`` in forward order, or, in a model without one, the
    convolutional class head (:func:`~distox.models.selection.classifier_name`), whose input
    map is averaged over positions into one feature per channel. The model is moved to ``device``
    for the pass and back after."""
    with on_device(model, device):
        try:
            head = dict(model.named_modules())[classifier_name(model, x[:1].to(device))]
        except SelectionError as exc:
            raise DistoxError(f"t-SNE needs the model's classifier: {exc}") from None
        grabbed: list[torch.Tensor] = []
        for i in range(0, len(x), batch_size):
            seen = layer_input(model, head, x[i:i + batch_size].to(device))
            if seen is None:
                raise DistoxError("t-SNE: the classifier did not run on a batch of the images")
            grabbed.append((seen.flatten(2).mean(2) if isinstance(head, nn.Conv2d) else seen.flatten(1)).cpu())
    return torch.cat(grabbed)


def embed(features: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE embedding (perplexity capped below N/3 for small N; one thread)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = len(features)
    perp = float(min(perplexity, max(2.0, (n - 1) / 3.0)))
    # one OpenMP thread: ≤ 1000 points take seconds, and oversubscribed threads on a busy
    # machine made the same fit 20× slower
    with threadpool_limits(limits=1):
        return TSNE(n_components=2, perplexity=perp, init="pca", random_state=int(seed),
                    learning_rate="auto").fit_transform(features.astype(np.float32))


def plot_tsne(panels: dict[str, dict[str, np.ndarray]], num_classes: int, title: str = "t-SNE of penultimate features"):
    """Figure: one panel per model; clean points coloured by class, poisoned points as black ×.

    ``panels[name] = {"xy": (N, 2), "label": (N,), "poisoned": (N,) bool}``.
    """
    from .common import pyplot

    plt = pyplot()
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 5.0), squeeze=False)
    cmap = plt.get_cmap("tab10" if num_classes <= 10 else "tab20")
    for ax, (name, p) in zip(axes[0], panels.items()):
        clean = ~p["poisoned"]
        sc = ax.scatter(p["xy"][clean, 0], p["xy"][clean, 1], c=p["label"][clean], cmap=cmap, s=9, alpha=0.75,
                        vmin=-0.5, vmax=(10 if num_classes <= 10 else 20) - 0.5)
        ax.scatter(p["xy"][~clean, 0], p["xy"][~clean, 1], c="black", marker="x", s=14, linewidths=0.8,
                   label="poisoned (trigger)")
        ax.set_title(name)
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
        ax.grid(alpha=0.2)
    handles = [plt.Line2D([], [], marker="o", ls="", color=cmap(c), label=f"clean, class {c}")
               for c in range(min(num_classes, 20))]
    handles.append(plt.Line2D([], [], marker="x", ls="", color="black", label="poisoned"))
    fig.legend(handles=handles, loc="center left", fontsize=8, bbox_to_anchor=(0.9, 0.5))
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.9, 0.95))
    del sc
    return fig
