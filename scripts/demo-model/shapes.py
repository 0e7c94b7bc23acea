"""The synthetic dataset of the demo model: one flat-coloured shape on a flat background.

Every image is drawn from a seeded generator, so the dataset is a pure function of the seed. The
vocabulary (colour and shape names) is the one source of truth for the training captions and for the
end-to-end tests' expectations (tests/e2e/test_demo_model.py reads the colours from here too).
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

# Named colours, chosen far apart in RGB so that a dominant colour names itself unambiguously.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 70, 220),
    "yellow": (240, 220, 40),
    "orange": (245, 140, 20),
    "purple": (140, 50, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle", "star")

# The live preview (A1111's "Approx cheap" map of the latent) shows the image at this contrast
# around mid-grey: the VAE is trained for it. Full contrast would need latents of RMS ~2.5 (the map's
# smallest singular value is 0.13); half keeps them near the unit RMS SD-1.x's schedule expects.
PREVIEW_CONTRAST = 0.5

# Drawn at 4x and reduced with a box filter: antialiased edges, as a photo of a shape would have.
SUPERSAMPLE = 4


def draw_shape(size: int, shape: str, colour: str, background: str, rng: np.random.Generator) -> Image.Image:
    """One image: `shape` in `colour` near the centre on a `background` field.

    Size and position jitter a little; the shape always covers the centre, so a test can read the
    shape's colour in the middle and the background's at the border.
    """
    s = size * SUPERSAMPLE
    image = Image.new("RGB", (s, s), COLOURS[background])
    draw = ImageDraw.Draw(image)
    radius = s * rng.uniform(0.26, 0.36)
    cx = s / 2 + s * rng.uniform(-0.06, 0.06)
    cy = s / 2 + s * rng.uniform(-0.06, 0.06)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
    elif shape == "square":
        half = radius * 0.9
        draw.rectangle([cx - half, cy - half, cx + half, cy + half], fill=fill)
    elif shape == "triangle":
        # Equilateral, pointing up, centred on its centroid.
        points = [(cx + radius * math.sin(a), cy - radius * math.cos(a)) for a in (0, 2 * math.pi / 3, 4 * math.pi / 3)]
        draw.polygon(points, fill=fill)
    elif shape == "star":
        points = []
        for k in range(10):
            r = radius if k % 2 == 0 else radius * 0.45
            a = k * math.pi / 5
            points.append((cx + r * math.sin(a), cy - r * math.cos(a)))
        draw.polygon(points, fill=fill)
    else:
        raise ValueError(f"unknown shape {shape}")
    return image.resize((size, size), Image.BOX)


# Caption templates with their cumulative probabilities (a uniform draw picks the first row whose
# bound exceeds it). Partial captions teach the model what each phrase means on its own, which is
# what makes a prompt like "a red circle" (any background) or a negative prompt like "blue
# background" work; the empty caption is the unconditional branch classifier-free guidance needs.
CAPTIONS = (
    (0.45, "a {colour} {shape} on a {background} background"),
    (0.60, "a {colour} {shape}"),
    (0.70, "{background} background"),
    (0.77, "a {shape} on a {background} background"),
    (0.84, "a {shape}"),
    (0.90, "{colour}"),
    (1.00, ""),
)


def caption(shape: str, colour: str, background: str, rng: np.random.Generator) -> str:
    """A caption naming all, some or none of the image's attributes (see CAPTIONS)."""
    u = rng.uniform()
    template = next(text for bound, text in CAPTIONS if u < bound)
    return template.format(shape=shape, colour=colour, background=background)


def random_attributes(rng: np.random.Generator) -> tuple[str, str, str]:
    """(shape, colour, background) drawn uniformly, the background never the shape's colour."""
    names = list(COLOURS)
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = names[rng.integers(len(names))]
    background = names[rng.integers(len(names))]
    while background == colour:
        background = names[rng.integers(len(names))]
    return shape, colour, background
