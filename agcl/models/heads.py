"""The projection head used during contrastive pre-training (stage 2)."""

from __future__ import annotations

import torch
from torch import nn

from agcl._validation import check_int, check_ndim, check_tensor

__all__ = ["ProjectionHead", "PretrainClassifier"]


class ProjectionHead(nn.Module):
    """Two dense layers with a ReLU between: ``in -> hidden -> out`` (2048 -> 2048 -> 256).

    The output is *not* normalised: the contrastive loss normalises its inputs. The head is
    discarded after pre-training; the segmentation stage uses the encoder's feature maps.

    Args:
        in_features: the encoder's pooled feature size (``encoder.num_features``).
        hidden_features: width of the hidden layer.
        out_features: size of the projected embedding.

    Shape:
        - x: ``(B, in_features)``.
        - output: ``(B, out_features)``.

    Raises:
        ValueError: a size is not a positive int, or ``x`` has the wrong shape.

    References:
        The AGCL paper, supplementary 6.1 ("a projection network p consisting of two dense
        layers with output dimension of 2048 and 256"); T. Chen et al., SimCLR, ICML 2020.

    Examples:
        >>> head = ProjectionHead(64, 64, 16)
        >>> head(torch.randn(3, 64)).shape
        torch.Size([3, 16])
    """

    def __init__(
        self, in_features: int = 2048, hidden_features: int = 2048, out_features: int = 256
    ) -> None:
        super().__init__()
        in_features = check_int("in_features", in_features, low=1)
        hidden_features = check_int("hidden_features", hidden_features, low=1)
        out_features = check_int("out_features", out_features, low=1)
        self.in_features = in_features
        self.out_features = out_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor("x", x)
        check_ndim("x", x, (2,), f"(B, in_features={self.in_features})")
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"x must have in_features={self.in_features} columns; got shape {tuple(x.shape)}. "
                f"Build the head with in_features={x.shape[1]} (the encoder's num_features)"
            )
        return self.fc2(self.relu(self.fc1(x)))


class PretrainClassifier(nn.Module):
    """Encoder + linear classifier on its pooled features (the ``ce`` pre-training baseline).

    Args:
        encoder: a module with ``num_features`` and ``forward_pooled(x) -> (B, num_features)``
            (every :class:`agcl.models.ResNet`).
        num_classes: classifier outputs (``modalities x organs`` in the pipeline).

    Shape:
        Input ``(B, C, h, w)``; output ``(B, num_classes)`` logits.

    Examples:
        >>> import torch
        >>> from agcl.models import resnet18
        >>> m = PretrainClassifier(resnet18(in_chans=2, base_width=4), 6)
        >>> m(torch.randn(2, 2, 32, 32)).shape
        torch.Size([2, 6])
    """

    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        if not hasattr(encoder, "num_features") or not hasattr(encoder, "forward_pooled"):
            raise TypeError(
                "encoder must have num_features and forward_pooled (an agcl ResNet); "
                f"got {type(encoder).__name__}"
            )
        self.encoder = encoder
        self.classifier = nn.Linear(int(getattr(encoder, "num_features")), int(num_classes))  # noqa: B009

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled encoder features ``(B, num_features)``."""
        return getattr(self.encoder, "forward_pooled")(x)  # noqa: B009

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
