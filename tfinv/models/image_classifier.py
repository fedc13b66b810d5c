"""The base of the image classifiers (`IRevNet`, `RevNet`, `InvertibleCNN`): their argument checks and shared config."""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf


class ImageClassifier(keras.Model):
    """A ``(B, H, W, C) -> (B, num_classes)`` logits model; the checks its subclasses share.

    Every error names the subclass and what was expected. Subclasses set ``image_shape`` and
    ``num_classes`` and build their layers eagerly (Keras's symbolic auto-build is avoided).
    """

    def _image_shape_argument(self, image_shape: Sequence[int]) -> tuple[int, int, int]:
        """``image_shape`` as a tuple of three positive ints, or a `ValueError`."""
        image_shape = tuple(int(s) for s in image_shape)
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"{type(self).__name__} needs image_shape (H, W, C) of positive sizes, "
                             f"got {image_shape}")
        return image_shape

    def _stages_argument(self, blocks_per_stage: Sequence[int]) -> tuple[int, ...]:
        """``blocks_per_stage`` as a non-empty tuple of positive ints, or a `ValueError`."""
        stages = tuple(int(b) for b in blocks_per_stage)
        if not stages or min(stages) < 1:
            raise ValueError(f"{type(self).__name__} needs blocks_per_stage of positive counts, "
                             f"got {tuple(blocks_per_stage)}")
        return stages

    def _check_divisible(self, image_shape: tuple[int, int, int], factor: int, what: str) -> None:
        """A `ValueError` unless H and W are multiples of ``factor`` (``what`` says why)."""
        height, width = image_shape[:2]
        if height % factor or width % factor:
            raise ValueError(f"{type(self).__name__} with {what} needs H and W divisible by {factor}, "
                             f"got (H, W) = ({height}, {width})")

    def _check_images(self, images: tf.Tensor) -> None:
        """A `ValueError` unless ``images`` is a ``(batch,) + image_shape`` batch."""
        got = tuple(images.shape[1:])
        if len(images.shape) != 4 or any(g is not None and g != e for g, e in zip(got, self.image_shape)):
            raise ValueError(f"{type(self).__name__} '{self.name}' expects images of shape (batch, "
                             f"{', '.join(map(str, self.image_shape))}), got {tuple(images.shape)}")

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        """Keras's config plus ``image_shape`` and ``num_classes``; subclasses add their own arguments."""
        return {**super().get_config(), "image_shape": list(self.image_shape), "num_classes": self.num_classes}
