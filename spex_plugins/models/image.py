"""Images: a grid of patches; a masked patch shows a blurred copy of the image or a constant."""

from __future__ import annotations

import json

import numpy as np

from ..runtime import fingerprint, model_key
from .base import MaskedValueFunction, resolve_device

__all__ = ["ImagePatches"]


def gaussian_blur(image, sigma: float):
    """Separable Gaussian blur of a (C, H, W) float tensor (reflect padding)."""
    import torch

    radius = max(1, int(round(3 * sigma)))
    grid = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-0.5 * (grid / sigma) ** 2)
    channels = image.shape[0]
    x = image[None]
    pad_h, pad_w = min(radius, image.shape[1] - 1), min(radius, image.shape[2] - 1)
    x = torch.nn.functional.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
    k_h = kernel[radius - pad_h:radius + pad_h + 1]
    k_w = kernel[radius - pad_w:radius + pad_w + 1]
    k_h, k_w = k_h / k_h.sum(), k_w / k_w.sum()
    x = torch.nn.functional.conv2d(x, k_h.view(1, 1, -1, 1).repeat(channels, 1, 1, 1),
                                   groups=channels)
    x = torch.nn.functional.conv2d(x, k_w.view(1, 1, 1, -1).repeat(channels, 1, 1, 1),
                                   groups=channels)
    return x[0]


class ImagePatches(MaskedValueFunction):
    """Value function of an image classifier over a grid of patches.

    Parameters
    ----------
    model : torch module (or callable) mapping images (b, C, H, W) to scores (b, K).
    image : (C, H, W) array or tensor.
    patch_size : patch side in pixels (int or (h, w)); edge patches may be smaller.
    replace : "blur" (a Gaussian-blurred copy, ``sigma`` default patch side / 2) or
        "constant" (``value`` everywhere).
    target : the explained class (default: the class predicted for the full image).
    output : "logit" (the model's score) or "probability" (softmax).
    batch_size, device, progress : evaluation settings (batches halve on out-of-memory).

    Attributes ``n`` (patches), ``features`` (``"r,c"``), ``boxes`` ((top, left, bottom, right)
    per patch), ``replacement`` (the image masked patches show), ``target``.
    """

    def __init__(self, model, image, patch_size: int | tuple[int, int] = 16,
                 replace: str = "blur", value: float = 0.0, sigma: float | None = None,
                 target: int | None = None, output: str = "logit", batch_size: int = 32,
                 device=None, progress: bool = False):
        import torch

        if replace not in ("blur", "constant"):
            raise ValueError(f"replace must be 'blur' or 'constant', got {replace!r}")
        if output not in ("logit", "probability"):
            raise ValueError(f"output must be 'logit' or 'probability', got {output!r}")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval() if hasattr(model, "to") else model
        image = torch.as_tensor(np.asarray(image) if not torch.is_tensor(image) else image)
        if image.ndim != 3:
            raise ValueError(f"image must have shape (C, H, W), got {tuple(image.shape)}")
        self.image = image.float().to(self.device)
        _, height, width = self.image.shape
        ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
        rows, cols = -(-height // ph), -(-width // pw)
        self.grid = (rows, cols)
        self.n = rows * cols
        self.features = [f"{r},{c}" for r in range(rows) for c in range(cols)]
        self.boxes = [(r * ph, c * pw, min(height, (r + 1) * ph), min(width, (c + 1) * pw))
                      for r in range(rows) for c in range(cols)]
        patch_of = (torch.arange(height)[:, None] // ph) * cols + torch.arange(width)[None] // pw
        self.patch_of = patch_of.to(self.device)
        if replace == "blur":
            self.replacement = gaussian_blur(self.image, sigma or max(ph, pw) / 2)
        else:
            self.replacement = torch.full_like(self.image, float(value))
        self.replace, self.value, self.output = replace, value, output
        self.batch_size = int(batch_size)
        self.progress = progress
        scores = self.scores(np.ones((1, self.n), bool))
        self.target = int(np.argmax(scores[0])) if target is None else int(target)
        if not 0 <= self.target < scores.shape[1]:
            raise ValueError(f"target class {self.target} outside the {scores.shape[1]} classes")

    def masked_inputs(self, masks):
        """Images (m, C, H, W) the model sees for bool masks (m, n)."""
        import torch

        keep = torch.as_tensor(np.asarray(masks, dtype=bool), device=self.device)
        pixels = keep[:, self.patch_of]  # (m, H, W)
        return torch.where(pixels[:, None], self.image[None], self.replacement[None])

    def scores(self, masks: np.ndarray) -> np.ndarray:
        """Model scores (m, K) for bool masks (m, n)."""
        import torch

        with torch.inference_mode():
            out = self.model(self.masked_inputs(masks))
            if self.output == "probability":
                out = out.float().softmax(-1)
        return out.float().cpu().double().numpy().reshape(len(masks), -1)

    def evaluate_batch(self, masks: np.ndarray) -> np.ndarray:
        return self.scores(masks)[:, self.target]

    def cache_key(self) -> str:
        """JSON: the settings and fingerprints of the model (all its parameters and buffers),
        the image, the replacement image (blur ``sigma`` or ``value``) and the patch boxes."""
        return json.dumps({"class": type(self).__name__, **model_key(self.model),
                           "image": fingerprint(self.image),
                           "replacement": fingerprint(self.replacement),
                           "boxes": fingerprint(np.asarray(self.boxes, dtype=np.int64)),
                           "grid": self.grid, "replace": self.replace, "value": self.value,
                           "output": self.output, "target": self.target}, sort_keys=True)
