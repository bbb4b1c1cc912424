"""ImagePatches on a small torch CNN."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="image value functions need torch")

from spex_plugins.models import ImagePatches  # noqa: E402


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(),
                               torch.nn.Linear(16, 5)).eval()


@pytest.fixture(scope="module")
def image():
    return torch.rand(3, 20, 24, generator=torch.Generator().manual_seed(1))


def test_patches_constant_and_unmasked_output(cnn, image):
    f = ImagePatches(cnn, image, patch_size=8, replace="constant", value=0.5, device="cpu")
    assert f.grid == (3, 3) and f.n == 9 and f.boxes[-1] == (16, 16, 20, 24)
    with torch.no_grad():
        full = cnn(image[None])[0].double().numpy()
    assert f.target == int(np.argmax(full))
    np.testing.assert_allclose(f(np.ones((1, 9), bool)), [full[f.target]], atol=1e-6)
    mask = np.ones(9, bool)
    mask[4] = False  # the centre patch: rows 8..15, columns 8..15
    (built,) = f.masked_inputs(mask[None])
    assert torch.all(built[:, 8:16, 8:16] == 0.5)
    outside = torch.ones(20, 24, dtype=torch.bool)
    outside[8:16, 8:16] = False
    assert torch.equal(built[:, outside], image[:, outside])
    masks = np.random.default_rng(0).random((11, 9)) < 0.5
    np.testing.assert_allclose(f(masks), np.concatenate([f(m[None]) for m in masks]), atol=1e-5)


def test_blur_replacement(cnn, image):
    f = ImagePatches(cnn, image, patch_size=(10, 12), target=3, output="probability",
                     device="cpu")
    assert f.n == 4 and f.target == 3
    blurred = f.replacement
    assert blurred.shape == image.shape and blurred.std() < image.std()
    torch.testing.assert_close(blurred.mean(), image.mean(), atol=0.02, rtol=0)
    (built,) = f.masked_inputs(np.array([[False, True, True, True]]))
    assert torch.equal(built[:, :10, :12], blurred[:, :10, :12])
    out = f(np.ones((2, 4), bool))
    with torch.no_grad():
        p = cnn(image[None]).softmax(-1)[0, 3].item()
    np.testing.assert_allclose(out, [p, p], atol=1e-6)
    with pytest.raises(ValueError, match="replace"):
        ImagePatches(cnn, image, replace="noise")
    with pytest.raises(ValueError, match="shape"):
        ImagePatches(cnn, image[0])
